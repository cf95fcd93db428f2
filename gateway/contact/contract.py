"""What Amazon Connect's ``StartEmailContact`` accepts: the installed botocore model, plus the documented
limits the model lacks, in one place.

botocore itself checks only required members, types and minimums before sending; the service enforces
maxima, patterns, enums and the semantic limits. The gateway builds requests within all of them, and the
emulator refuses whatever breaks one, both through :func:`violations`. Maxima are read from the model at
run time (they differ between botocore releases: ten attachments in 1.43.11, fifty in 1.43.117).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import regex

if TYPE_CHECKING:
    from botocore.loaders import Loader
    from botocore.model import OperationModel

__all__ = ["OPERATION", "Limits", "Violation", "adopt", "limits", "operation_model", "violations"]

OPERATION = "StartEmailContact"

# Documented in the Administrator Guide and API reference, absent from the model.
ADDITIONAL_RECIPIENTS_MAX = 49  # the destination plus at most 49 others, across To and Cc
REFERENCES_MAX_BYTES = 4096  # all references of a contact together
ATTRIBUTES_MAX_BYTES = 32768  # all user-defined attributes together
BODY_MAX_BYTES = 5 * 1024 * 1024  # 5 MiB of UTF-8
BODY_CONTENT_TYPES = ("text/plain", "text/html")
REFERENCE_TYPES_ON_CREATE = ("URL", "NUMBER", "STRING", "DATE")
ATTACHMENT_URL_SCHEMES = ("http://", "https://")


@functools.cache
def model_loader() -> Loader:
    """botocore's reader of service models, one per process: every session given it (this module's, and
    each AWS client's) parses a model's JSON once, instead of once per session (13 MiB for Connect's)."""
    from botocore.loaders import create_loader

    return create_loader()


@functools.cache
def operation_model() -> OperationModel:
    import botocore.session  # here, not above: a process given its limits (adopt) never loads the model

    session = botocore.session.get_session()
    session.register_component("data_loader", model_loader())
    return session.get_service_model("connect").operation_model(OPERATION)


def _input_shape() -> Any:
    """The request shape; typed ``Any`` because botocore's shapes are navigated by member name."""
    return operation_model().input_shape


def _shape(*path: str) -> Any:
    shape = _input_shape()
    for name in path:
        shape = shape.member if name == "[]" else shape.members[name]
    return shape


@dataclass(frozen=True)
class Limits:
    """The bounds the request builder needs, read once from the model."""

    subject_chars: int
    body_chars: int
    body_bytes: int
    content_type_chars: int
    header_value_chars: int
    address_chars: int
    address_pattern: str
    display_name_chars: int
    file_name_chars: int
    file_name_pattern: str
    attachments: int
    s3_url_chars: int
    recipients_per_list: int
    additional_recipients: int
    references_bytes: int
    reference_value_chars: int
    attributes_bytes: int
    name_chars: int
    description_chars: int
    header_names: tuple[str, ...]


_adopted: Limits | None = None


def adopt(known: Limits) -> None:
    """Use limits read by another process (a parse worker's parent), instead of loading the model here."""
    global _adopted
    _adopted = known


def limits() -> Limits:
    return _adopted or _model_limits()


@functools.cache
def _model_limits() -> Limits:
    def maximum(*path: str) -> int:
        return int(_shape(*path).metadata["max"])

    raw = ("EmailMessage", "RawMessage")
    address = _shape("FromEmailAddress", "EmailAddress").metadata
    return Limits(
        subject_chars=maximum(*raw, "Subject"),
        body_chars=maximum(*raw, "Body"),
        body_bytes=BODY_MAX_BYTES,
        content_type_chars=maximum(*raw, "ContentType"),
        header_value_chars=int(_shape(*raw, "Headers").value.metadata["max"]),
        address_chars=int(address["max"]),
        address_pattern=str(address["pattern"]),
        display_name_chars=maximum("FromEmailAddress", "DisplayName"),
        file_name_chars=maximum("Attachments", "[]", "FileName"),
        file_name_pattern=str(_shape("Attachments", "[]", "FileName").metadata["pattern"]),
        attachments=maximum("Attachments"),
        s3_url_chars=maximum("Attachments", "[]", "S3Url"),
        recipients_per_list=maximum("AdditionalRecipients", "ToAddresses"),
        additional_recipients=ADDITIONAL_RECIPIENTS_MAX,
        references_bytes=REFERENCES_MAX_BYTES,
        reference_value_chars=int(_shape("References").value.members["Value"].metadata["max"]),
        attributes_bytes=ATTRIBUTES_MAX_BYTES,
        name_chars=maximum("Name"),
        description_chars=maximum("Description"),
        header_names=tuple(_shape(*raw, "Headers").key.enum),
    )


@functools.cache
def _compiled(pattern: str) -> regex.Pattern[str]:
    return regex.compile(pattern)


def matches(pattern: str, value: str) -> bool:
    """A model pattern matched against the whole value, as the service (Java) matches it."""
    return _compiled(pattern).fullmatch(value) is not None


@dataclass(frozen=True)
class Violation:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def violations(request: Any, *, member: str | None = None) -> list[Violation]:
    """Everything in ``request`` the service would refuse; empty when it would accept it.

    With ``member``, ``request`` is the value of that one top-level member (used to check static route
    settings such as ``attributes`` when the configuration is loaded).
    """
    if member is None:
        found = list(_walk(_input_shape(), request, ""))
        found.extend(_documented(request))
    else:
        shape = _input_shape().members[member]
        found = list(_walk(shape, request, member))
        found.extend(_documented({member: request}))
    return found


def _walk(shape: Any, value: Any, path: str) -> Iterator[Violation]:
    kind = shape.type_name
    if kind == "structure":
        yield from _walk_structure(shape, value, path)
    elif kind == "list":
        if not isinstance(value, list):
            yield Violation(path, "must be a list")
            return
        yield from _length(shape, len(value), path, "items")
        for index, item in enumerate(value):
            yield from _walk(shape.member, item, f"{path}[{index}]")
    elif kind == "map":
        if not isinstance(value, dict):
            yield Violation(path, "must be a map")
            return
        yield from _length(shape, len(value), path, "entries")
        for key, item in value.items():
            yield from _walk(shape.key, key, f"{path}.key({key!r})")
            yield from _walk(shape.value, item, f"{path}[{key!r}]")
    elif kind == "string":
        yield from _walk_string(shape, value, path)
    elif kind in ("integer", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            yield Violation(path, "must be an integer")
    elif kind == "boolean":
        if not isinstance(value, bool):
            yield Violation(path, "must be a boolean")
    else:  # pragma: no cover - the operation has no other kinds today
        yield Violation(path, f"unsupported type {kind}")


def _walk_structure(shape: Any, value: Any, path: str) -> Iterator[Violation]:
    if not isinstance(value, dict):
        yield Violation(path or "request", "must be a structure")
        return
    prefix = f"{path}." if path else ""
    members = shape.members
    for name in shape.required_members:
        if value.get(name) is None:
            yield Violation(prefix + name, "is required")
    for name, item in value.items():
        if name not in members:
            yield Violation(prefix + name, "is not a member of this structure")
        elif item is not None:
            yield from _walk(members[name], item, prefix + name)


def _walk_string(shape: Any, value: Any, path: str) -> Iterator[Violation]:
    if not isinstance(value, str):
        yield Violation(path, "must be a string")
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        yield Violation(path, "is not valid Unicode (lone surrogate)")
        return
    yield from _length(shape, len(value), path, "characters")
    metadata = shape.metadata
    if "pattern" in metadata and not matches(metadata["pattern"], value):
        yield Violation(path, f"must match the pattern {metadata['pattern']}")
    enum = getattr(shape, "enum", None)
    if enum and value not in enum:
        yield Violation(path, f"must be one of {', '.join(enum)}")


def _length(shape: Any, length: int, path: str, unit: str) -> Iterator[Violation]:
    metadata = shape.metadata
    if "min" in metadata and length < metadata["min"]:
        yield Violation(path, f"must have at least {metadata['min']} {unit} (has {length})")
    if "max" in metadata and length > metadata["max"]:
        yield Violation(path, f"must have at most {metadata['max']} {unit} (has {length})")


def _utf8_size(*texts: object) -> int:
    return sum(len(text.encode("utf-8", "surrogatepass")) for text in texts if isinstance(text, str))


def _documented(request: Mapping[str, Any]) -> Iterator[Violation]:
    """The limits from the documentation that the model does not carry."""
    recipients = request.get("AdditionalRecipients")
    if isinstance(recipients, dict):
        count = sum(len(v) for v in recipients.values() if isinstance(v, list))
        if count > ADDITIONAL_RECIPIENTS_MAX:
            yield Violation(
                "AdditionalRecipients",
                f"at most {ADDITIONAL_RECIPIENTS_MAX} addresses across To and Cc (has {count})",
            )
    references = request.get("References")
    if isinstance(references, dict):
        size = 0
        for key, reference in references.items():
            size += _utf8_size(key)
            if isinstance(reference, dict):
                size += _utf8_size(reference.get("Value"))
                kind = reference.get("Type")
                if kind not in REFERENCE_TYPES_ON_CREATE:
                    yield Violation(
                        f"References[{key!r}].Type",
                        f"must be one of {', '.join(REFERENCE_TYPES_ON_CREATE)} when creating a contact",
                    )
        if size > REFERENCES_MAX_BYTES:
            yield Violation("References", f"at most {REFERENCES_MAX_BYTES} UTF-8 bytes in all (has {size})")
    attributes = request.get("Attributes")
    if isinstance(attributes, dict):
        size = sum(_utf8_size(k, v) for k, v in attributes.items())
        if size > ATTRIBUTES_MAX_BYTES:
            yield Violation("Attributes", f"at most {ATTRIBUTES_MAX_BYTES} UTF-8 bytes in all (has {size})")
    message = request.get("EmailMessage")
    raw = message.get("RawMessage") if isinstance(message, dict) else None
    if isinstance(raw, dict):
        body = raw.get("Body")
        if isinstance(body, str) and _utf8_size(body) > BODY_MAX_BYTES:
            yield Violation("EmailMessage.RawMessage.Body", f"at most {BODY_MAX_BYTES} UTF-8 bytes")
        content_type = raw.get("ContentType")
        if isinstance(content_type, str) and content_type not in BODY_CONTENT_TYPES:
            yield Violation(
                "EmailMessage.RawMessage.ContentType", f"must be one of {', '.join(BODY_CONTENT_TYPES)}"
            )
    attachments = request.get("Attachments")
    if isinstance(attachments, list):
        for index, attachment in enumerate(attachments):
            url = attachment.get("S3Url") if isinstance(attachment, dict) else None
            if isinstance(url, str) and not url.startswith(ATTACHMENT_URL_SCHEMES):
                yield Violation(f"Attachments[{index}].S3Url", "must be a pre-signed http(s) URL")
