"""The configuration file: TOML in, frozen and validated settings out.

:func:`parse_config` is pure (a dict in, :class:`Settings` out) so that every rule is tested without a
server; :func:`load_config` adds the file. A wrong file stops the gateway at start with one line naming the
key, e.g. ``routes[2].match: must be an address, *@domain or *``. Credentials never live here: they come
from the standard AWS chain (environment, shared files, instance or pod role).
"""

from __future__ import annotations

import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from gateway import contract
from gateway.addresses import AddressError, parse_address
from gateway.errors import ConfigError

__all__ = [
    "AttachmentSettings",
    "AwsSettings",
    "RouteSettings",
    "Settings",
    "SmtpSettings",
    "load_config",
    "parse_config",
    "split_host_port",
]

T = TypeVar("T")

DEFAULT_MAX_MESSAGE_SIZE = 40 * 1024 * 1024  # what SES inbound accepts, headers included
MAX_PREFIX_CHARS = 200  # keeps presigned URLs far inside Connect's 2,000 characters


@dataclass(frozen=True)
class SmtpSettings:
    host: str = "127.0.0.1"
    port: int = 2525
    hostname: str = field(default_factory=socket.getfqdn)
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE


@dataclass(frozen=True)
class AwsSettings:
    region: str = "us-east-1"
    connect_endpoint_url: str | None = None
    s3_endpoint_url: str | None = None


@dataclass(frozen=True)
class AttachmentSettings:
    bucket: str
    prefix: str = "inbound/"
    url_expiry_seconds: int = 6 * 3600
    sse: str | None = None
    kms_key_id: str | None = None


@dataclass(frozen=True)
class RouteSettings:
    """One ``[[routes]]`` entry. ``match`` is an address, ``*@domain`` or ``*`` (every recipient)."""

    match: str
    instance_id: str
    destination: str | None = None
    contact_flow_id: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    segment_attributes: Mapping[str, Any] = field(default_factory=dict)
    references: Mapping[str, Any] = field(default_factory=dict)
    name: str | None = None
    description: str | None = None
    related_contact_header: str | None = None


@dataclass(frozen=True)
class Settings:
    smtp: SmtpSettings
    aws: AwsSettings
    attachments: AttachmentSettings
    routes: tuple[RouteSettings, ...]


def load_config(path: str | Path) -> Settings:
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the configuration file ({error.strerror})") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from None
    return parse_config(document)


def parse_config(document: Mapping[str, Any]) -> Settings:
    top = _Table(document, "")
    smtp = _smtp(top.table("smtp"))
    aws = _aws(top.table("aws"))
    attachments = _attachments(top.table("attachments", required=True))
    routes = _routes(top.array("routes"))
    top.done()
    return Settings(smtp=smtp, aws=aws, attachments=attachments, routes=routes)


class _Table:
    """Reads the keys of one TOML table, naming the key in every error and refusing unknown keys."""

    def __init__(self, values: Mapping[str, Any], path: str) -> None:
        self.values = values
        self.path = path
        self.used: set[str] = set()

    def name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.name(key)}: {message}")

    def get(self, key: str, kind: type[T], default: T) -> T:
        self.used.add(key)
        value = self.values.get(key, default)
        if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
            raise self.error(key, f"must be {_kind_name(kind)}, not {type(value).__name__}")
        return value

    def text(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        """A string; an empty string counts as absent (``connect_endpoint_url = ""``)."""
        if required and key not in self.values:
            raise self.error(key, "is required")
        value = self.get(key, str, default or "")
        return value or None

    def table(self, key: str, *, required: bool = False) -> _Table:
        if required and key not in self.values:
            raise ConfigError(f"[{self.name(key)}]: this section is required")
        return _Table(self.get(key, dict, {}), self.name(key))

    def array(self, key: str) -> list[_Table]:
        items = self.get(key, list, [])
        tables = []
        for index, item in enumerate(items):
            path = f"{self.name(key)}[{index}]"
            if not isinstance(item, dict):
                raise ConfigError(f"{path}: must be a table")
            tables.append(_Table(item, path))
        return tables

    def check(self, key: str, value: T, rule: Callable[[T], str | None]) -> T:
        problem = rule(value)
        if problem:
            raise self.error(key, problem)
        return value

    def done(self) -> None:
        unknown = sorted(set(self.values) - self.used)
        if unknown:
            raise self.error(unknown[0], "unknown key (is it misspelled or in the wrong section?)")


def _kind_name(kind: type) -> str:
    return {str: "a string", int: "an integer", dict: "a table", list: "an array"}.get(kind, kind.__name__)


def split_host_port(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` into its parts; raises ValueError with a readable message."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError("must be host:port, e.g. 127.0.0.1:2525 or [::1]:2525")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"the port {port!r} is not a number from 0 to 65535")
    return host, int(port)


def _positive(value: int) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _url(value: str | None) -> str | None:
    if value is None or value.startswith(("http://", "https://")):
        return None
    return "must be an http:// or https:// URL (or empty)"


def _smtp(table: _Table) -> SmtpSettings:
    defaults = SmtpSettings()
    listen = table.get("listen", str, f"{defaults.host}:{defaults.port}")
    try:
        host, port = split_host_port(listen)
    except ValueError as error:
        raise table.error("listen", str(error)) from None
    hostname = table.get("hostname", str, defaults.hostname)
    table.check("hostname", hostname, lambda v: None if v and " " not in v else "must be a host name")
    size = table.check(
        "max_message_size", table.get("max_message_size", int, defaults.max_message_size), _positive
    )
    table.done()
    return SmtpSettings(host=host, port=port, hostname=hostname, max_message_size=size)


def _aws(table: _Table) -> AwsSettings:
    region = table.text("region", AwsSettings.region)
    connect = table.check("connect_endpoint_url", table.text("connect_endpoint_url"), _url)
    s3 = table.check("s3_endpoint_url", table.text("s3_endpoint_url"), _url)
    table.done()
    return AwsSettings(region=region or AwsSettings.region, connect_endpoint_url=connect, s3_endpoint_url=s3)


def _bucket_name(value: str | None) -> str | None:
    if value is None:
        return "is required"
    ok = 3 <= len(value) <= 63 and value[0].isalnum() and value[-1].isalnum()
    ok = ok and all(c.islower() or c.isdigit() or c in ".-" for c in value)
    return None if ok else "is not a valid S3 bucket name (3-63 lower-case letters, digits, '.' and '-')"


def _prefix(value: str) -> str | None:
    if value.startswith("/"):
        return "must not start with '/'"
    if len(value) > MAX_PREFIX_CHARS:
        return f"must be at most {MAX_PREFIX_CHARS} characters, so that presigned URLs stay short"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return "must not contain control characters"
    return None


def _attachments(table: _Table) -> AttachmentSettings:
    bucket = table.check("bucket", table.text("bucket"), _bucket_name)
    prefix = table.check("prefix", table.get("prefix", str, AttachmentSettings.prefix), _prefix)
    expiry = table.get("url_expiry_seconds", int, AttachmentSettings.url_expiry_seconds)
    table.check(
        "url_expiry_seconds", expiry, lambda v: None if 1 <= v <= 604800 else "must be 1 to 604800 (7 days)"
    )
    sse = table.check(
        "sse",
        table.text("sse"),
        lambda v: None if v in (None, "AES256", "aws:kms") else 'must be "AES256" or "aws:kms"',
    )
    kms_key_id = table.text("kms_key_id")
    if kms_key_id and sse != "aws:kms":
        raise table.error("kms_key_id", 'is only used with sse = "aws:kms"')
    table.done()
    assert bucket is not None
    return AttachmentSettings(bucket, prefix, expiry, sse, kms_key_id)


def _match(value: str) -> str | None:
    if value == "*":
        return None
    local, at, domain = value.rpartition("@")
    if not at or not domain or "*" in domain or (local != "*" and "*" in local):
        return "must be an address, *@domain or *"
    try:
        parse_address(value if local != "*" else f"any@{domain}")
    except AddressError as error:
        return str(error)
    return None


def _connect_address(value: str | None) -> str | None:
    if value is None:
        return None
    limits = contract.limits()
    if len(value) > limits.address_chars or not contract.matches(limits.address_pattern, value):
        return "is not an email address Amazon Connect accepts"
    return None


def _header_name(value: str | None) -> str | None:
    if value is None or (value.isascii() and value.replace("-", "").isalnum()):
        return None
    return "must be a header name such as X-Connect-Related-Contact"


def _member(name: str) -> Callable[[Any], str | None]:
    """A rule that checks a route value against the Connect model's member of the same meaning."""

    def rule(value: Any) -> str | None:
        if value is None or value == {}:
            return None
        found = contract.violations(value, member=name)
        return "; ".join(str(v) for v in found) or None

    return rule


def _routes(tables: list[_Table]) -> tuple[RouteSettings, ...]:
    if not tables:
        raise ConfigError("routes: at least one [[routes]] entry is required (mail for no route is refused)")
    routes: list[RouteSettings] = []
    seen: dict[str, str] = {}
    for table in tables:
        match = table.check("match", table.text("match", required=True) or "", _match)
        if match.casefold() in seen:
            raise table.error("match", f"is the same as {seen[match.casefold()]}, which wins (first match)")
        seen[match.casefold()] = table.name("match")
        instance_id = table.check(
            "instance_id", table.text("instance_id", required=True), _member("InstanceId")
        )
        destination = table.check("destination", table.text("destination"), _connect_address)
        routes.append(
            RouteSettings(
                match=match,
                instance_id=instance_id or "",
                destination=destination,
                contact_flow_id=table.check(
                    "contact_flow_id", table.text("contact_flow_id"), _member("ContactFlowId")
                ),
                attributes=table.check(
                    "attributes", table.get("attributes", dict, {}), _member("Attributes")
                ),
                segment_attributes=table.check(
                    "segment_attributes",
                    table.get("segment_attributes", dict, {}),
                    _member("SegmentAttributes"),
                ),
                references=table.check(
                    "references", table.get("references", dict, {}), _member("References")
                ),
                name=table.check("name", table.text("name"), _member("Name")),
                description=table.check("description", table.text("description"), _member("Description")),
                related_contact_header=table.check(
                    "related_contact_header", table.text("related_contact_header"), _header_name
                ),
            )
        )
        table.done()
    return tuple(routes)
