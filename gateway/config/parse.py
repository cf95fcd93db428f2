"""The configuration file: TOML in, frozen and validated settings out.

:func:`parse_config` is pure (a dict and what it needs to know of the machine, :class:`Host`, in;
:class:`~gateway.settings.Settings` out) so that every rule is tested without a server; :func:`load_config`
adds the file and the machine. A wrong file stops the gateway at start with one line naming the
key, e.g. ``routes[2].match: must be an address, *@domain or *``. Credentials never live here: they come
from the standard AWS chain (environment, shared files, instance or pod role).
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.addresses import AddressError, parse_address
from gateway.config.frontdoor import parse_access, parse_auth, parse_automatic, parse_limits, parse_tls
from gateway.config.machine import read_memory_limit
from gateway.config.placement import (
    MAX_PREFIX_CHARS,
    bucket_name,
    endpoint_url,
    key_prefix,
    parse_quotas,
    parse_route_placement,
    region,
)
from gateway.config.table import Table, split_host_port
from gateway.config.trust import parse_authentication, parse_dns, parse_filters, parse_route_trust_mode
from gateway.contact import contract
from gateway.contact.routing import Router
from gateway.errors import ConfigError, RefusedError
from gateway.settings import (
    AttachmentSettings,
    AwsSettings,
    HttpSettings,
    LogSettings,
    MessageSettings,
    QueueMode,
    QueueSettings,
    RouteSettings,
    Settings,
    SmtpSettings,
)

__all__ = ["MAX_PREFIX_CHARS", "Host", "load_config", "parse_config", "split_host_port"]


@dataclass(frozen=True)
class Host:
    """What the configuration needs to know of the machine it runs on. :func:`load_config` reads it once
    and passes it in, so that :func:`parse_config` is a pure function of its inputs."""

    hostname: str  # the default greeting name: the machine's FQDN
    memory: int  # bytes the gateway may use (the cgroup's limit, else the RAM): bounds the connections
    readable: Callable[[Path], bool]  # whether a file named in the configuration can be read

    @classmethod
    def this_machine(cls) -> Host:
        return cls(socket.getfqdn(), read_memory_limit(), _readable_file)


def _readable_file(path: Path) -> bool:
    return path.is_file() and os.access(path, os.R_OK)


def load_config(path: str | Path, host: Host | None = None) -> Settings:
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the configuration file ({error.strerror})") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from None
    return parse_config(document, host or Host.this_machine())


def parse_config(document: Mapping[str, Any], host: Host) -> Settings:
    top = Table(document, "")
    smtp = _smtp(top.table("smtp"), host.hostname)
    aws = _aws(top.table("aws"))
    attachments = _attachments(top.table("attachments", required=True))
    routes = _routes(top.array("routes"))
    queue = _queue(top.table("queue"))
    message = _message(top.table("message"))
    tls = parse_tls(top.table("tls"), host.readable)
    auth = parse_auth(top.table("auth"), tls, host.readable)
    access = parse_access(top.table("access"), auth)
    limits = parse_limits(top.table("limits"), host.memory)
    automatic = parse_automatic(top.table("automatic"))
    log = _log(top.table("log"))
    http = _http(top.table("http"))
    authentication = parse_authentication(top.table("authentication"), smtp.hostname)
    filters = parse_filters(top.table("filters"))
    dns = parse_dns(top.table("dns"))
    quotas = parse_quotas(top.array("quotas"), queue)
    top.done()
    _postmaster_routed(smtp, routes)
    _queue_apart(queue, attachments, routes)
    return Settings(
        smtp=smtp,
        aws=aws,
        attachments=attachments,
        routes=routes,
        queue=queue,
        message=message,
        tls=tls,
        auth=auth,
        access=access,
        limits=limits,
        automatic=automatic,
        log=log,
        http=http,
        authentication=authentication,
        filters=filters,
        dns=dns,
        quotas=quotas,
    )


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _smtp(table: Table, machine_name: str) -> SmtpSettings:
    defaults = SmtpSettings(hostname=machine_name)
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
    postmaster = table.check("postmaster", table.text("postmaster"), _address)
    event_loop = table.choice("event_loop", defaults.event_loop)
    table.done()
    return SmtpSettings(
        host=host,
        port=port,
        hostname=hostname,
        max_message_size=size,
        postmaster=postmaster,
        event_loop=event_loop,
    )


def _address(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        parse_address(value)
    except AddressError as error:
        return str(error)
    return None


def _postmaster_routed(smtp: SmtpSettings, routes: tuple[RouteSettings, ...]) -> None:
    """``[smtp] postmaster`` must be an address some route takes (it is routed like any recipient)."""
    if smtp.postmaster is None:
        return
    try:
        Router(routes).resolve(parse_address(smtp.postmaster))
    except RefusedError as refusal:
        raise ConfigError(f"smtp.postmaster: no route takes {smtp.postmaster} ({refusal.reply})") from None


def _aws(table: Table) -> AwsSettings:
    where = table.check("region", table.text("region", AwsSettings.region), region)
    connect = table.check("connect_endpoint_url", table.text("connect_endpoint_url"), endpoint_url)
    s3 = table.check("s3_endpoint_url", table.text("s3_endpoint_url"), endpoint_url)
    sts = table.check("sts_endpoint_url", table.text("sts_endpoint_url"), endpoint_url)
    sqs = table.check("sqs_endpoint_url", table.text("sqs_endpoint_url"), endpoint_url)
    dynamodb = table.check("dynamodb_endpoint_url", table.text("dynamodb_endpoint_url"), endpoint_url)
    table.done()
    return AwsSettings(
        region=where or AwsSettings.region,
        connect_endpoint_url=connect,
        s3_endpoint_url=s3,
        sts_endpoint_url=sts,
        sqs_endpoint_url=sqs,
        dynamodb_endpoint_url=dynamodb,
    )


def _attachments(table: Table) -> AttachmentSettings:
    bucket = table.check("bucket", table.text("bucket"), bucket_name)
    prefix = table.check("prefix", table.get("prefix", str, AttachmentSettings.prefix), key_prefix)
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
    defaults = AttachmentSettings(bucket or "")
    store_original = table.choice("store_original", defaults.store_original)
    settings = AttachmentSettings(
        bucket=bucket or "",
        prefix=prefix,
        url_expiry_seconds=expiry,
        sse=sse,
        kms_key_id=kms_key_id,
        allowed_file_types=table.converted("allowed_file_types", _file_types, defaults.allowed_file_types),
        max_file_size=table.size("max_file_size", defaults.max_file_size),
        max_total_size=table.size("max_total_size", defaults.max_total_size),
        store_original=store_original,
    )
    table.done()
    return settings


def _file_types(value: Any) -> tuple[str, ...] | None:
    """``["*"]`` (any type) or extensions such as ``[".pdf", "png"]``, lower-cased with their dot."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError('must be a list of file extensions, such as [".pdf", ".png"], or ["*"]')
    if "*" in value:
        return None
    return tuple(sorted({"." + v.strip().lower().lstrip(".") for v in value}))


def _log(table: Table) -> LogSettings:
    style = table.choice("format", LogSettings.format)
    level = table.check(
        "level",
        table.get("level", str, LogSettings.level).lower(),
        lambda v: (
            None if v in ("debug", "info", "warning", "error") else "must be debug, info, warning or error"
        ),
    )
    settings = LogSettings(style, level, table.get("personal_data", bool, False))
    table.done()
    return settings


def _http(table: Table) -> HttpSettings:
    settings = HttpSettings(listen=table.host_port("listen", HttpSettings.listen))
    table.done()
    return settings


def _message(table: Table) -> MessageSettings:
    prefer = table.choice("prefer_body", MessageSettings.prefer_body)
    table.done()
    return MessageSettings(prefer_body=prefer)


def _queue(table: Table) -> QueueSettings:
    defaults = QueueSettings()
    mode = table.choice("mode", defaults.mode)
    path = Path(table.get("path", str, str(defaults.path)))
    rate = table.check(
        "rate_per_second", table.get("rate_per_second", float, defaults.rate_per_second), _positive
    )
    burst = table.check("burst", table.get("burst", int, defaults.burst), _positive)
    workers = table.check("workers", table.get("workers", int, defaults.workers), _positive)
    retry_initial = table.duration("retry_initial", defaults.retry_initial)
    retry_max = table.duration("retry_max", defaults.retry_max)
    if retry_max < retry_initial:
        raise table.error("retry_max", "must not be shorter than retry_initial")
    settings = QueueSettings(
        mode=mode,
        path=path,
        rate_per_second=rate,
        burst=burst,
        workers=workers,
        max_age=table.duration("max_age", defaults.max_age),
        retry_initial=retry_initial,
        retry_max=retry_max,
        min_free_disk=table.size("min_free_disk", defaults.min_free_disk),
        shutdown_grace=table.duration("shutdown_grace", defaults.shutdown_grace),
        max_attempts=table.check(
            "max_attempts", table.get("max_attempts", int, defaults.max_attempts), _positive
        ),
        unreadable=table.choice("unreadable", defaults.unreadable),
        read_budget=table.check(
            "read_budget", table.duration("read_budget", defaults.read_budget), _positive
        ),
        readers=table.check("readers", table.get("readers", int, defaults.readers), _positive),
        reader_memory=table.size("reader_memory", defaults.reader_memory),
        smarthost=table.host_port("smarthost", defaults.smarthost),
        queue_url=table.check("queue_url", table.text("queue_url"), _queue_url),
        table=table.check("table", table.text("table"), _table_name),
        prefix=table.check("prefix", table.get("prefix", str, defaults.prefix), _queue_prefix),
    )
    if mode == QueueMode.SQS:
        for key in ("queue_url", "table"):
            if getattr(settings, key) is None:
                raise table.error(key, 'is required when mode is "sqs"')
    table.done()
    return settings


def _queue_url(value: str | None) -> str | None:
    if value is None:
        return None
    if not value.startswith(("http://", "https://")) or value.rstrip("/").count("/") < 3:
        return (
            "must be the queue's URL, such as https://sqs.us-east-1.amazonaws.com/111122223333/mail-gateway"
        )
    return None


_TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}")


def _table_name(value: str | None) -> str | None:
    if value is None or _TABLE_NAME.fullmatch(value):
        return None
    return "is not a DynamoDB table name (3-255 letters, digits, '_', '-' and '.')"


def _queue_prefix(value: str) -> str | None:
    if not value:
        return "must not be empty: the raw mail needs a prefix of its own"
    return key_prefix(value)


def _queue_apart(
    queue: QueueSettings, attachments: AttachmentSettings, routes: tuple[RouteSettings, ...]
) -> None:
    """Raw mail and attachments have lifecycles of their own: their prefixes must not contain each other,
    in ``[attachments]`` nor in a route that puts its attachments in the same bucket."""
    if queue.mode != QueueMode.SQS:
        return
    apart = [("attachments.prefix", attachments.prefix)] + [
        (f"routes[{number}].prefix", route.prefix)
        for number, route in enumerate(routes)
        if route.prefix is not None and route.bucket in (None, attachments.bucket)
    ]
    for key, prefix in apart:
        if queue.prefix.startswith(prefix) or prefix.startswith(queue.prefix):
            raise ConfigError(
                f"queue.prefix: {queue.prefix!r} overlaps {key} {prefix!r} in bucket {attachments.bucket}; "
                'give raw mail a prefix of its own (such as "queue/")'
            )


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


_INSTANCE_ARN = re.compile(r"arn:[\w-]+:connect:[\w-]*:\d*:instance/([^/\s]+)(/.*)?")


def _instance_id(value: str | None) -> str | None:
    """The instance's id, as Connect's API takes it: an ARN is refused, naming the id inside it."""
    if value is None:
        return None
    arn = _INSTANCE_ARN.fullmatch(value.strip())
    if arn is not None:
        return f"is an ARN; give the instance id inside it: {arn[1]}"
    if ":" in value or "/" in value:
        return "must be the instance id (such as 8f1c2d3e-0000-4000-8000-000000000001), not an ARN or a path"
    return _member("InstanceId")(value)


def _header_name(value: str | None) -> str | None:
    if value is None or (value.isascii() and value.replace("-", "").isalnum()):
        return None
    return "must be a header name such as X-Connect-Related-Contact"


ROUTE_REFERENCES_MAX_BYTES = 3072  # the rest of Connect's 4,096 is the gateway's, to link the original


def _route_references(value: Any) -> str | None:
    problem = _member("References")(value)
    if problem is None and value:
        size = sum(len(str(k).encode()) + len(str(v.get("Value", "")).encode()) for k, v in value.items())
        if size > ROUTE_REFERENCES_MAX_BYTES:
            return f"at most {ROUTE_REFERENCES_MAX_BYTES} bytes in all, to leave room for the gateway's own"
    return problem


def _member(name: str) -> Callable[[Any], str | None]:
    """A rule that checks a route value against the Connect model's member of the same meaning."""

    def rule(value: Any) -> str | None:
        if value is None or value == {}:
            return None
        found = contract.violations(value, member=name)
        return "; ".join(str(v) for v in found) or None

    return rule


def _routes(tables: list[Table]) -> tuple[RouteSettings, ...]:
    if not tables:
        raise ConfigError("routes: at least one [[routes]] entry is required (mail for no route is refused)")
    routes: list[RouteSettings] = []
    seen: dict[str, str] = {}
    for table in tables:
        match = table.check("match", table.text("match", required=True) or "", _match)
        if match.casefold() in seen:
            raise table.error("match", f"is the same as {seen[match.casefold()]}, which wins (first match)")
        seen[match.casefold()] = table.name("match")
        instance_id = table.check("instance_id", table.text("instance_id", required=True), _instance_id)
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
                references=table.check("references", table.get("references", dict, {}), _route_references),
                name=table.check("name", table.text("name"), _member("Name")),
                description=table.check("description", table.text("description"), _member("Description")),
                related_contact_header=table.check(
                    "related_contact_header", table.text("related_contact_header"), _header_name
                ),
                sender_from_reply_to=table.get("sender_from_reply_to", bool, False),
                trust_mode=parse_route_trust_mode(table),
                **parse_route_placement(table),
            )
        )
        table.done()
    return tuple(routes)
