"""A parsed mail and its target into the ``StartEmailContact`` request: pure, and always within the contract.

Every value is made to fit :func:`gateway.contract.limits` here, so the service never refuses a request for
its shape. The ``ClientToken`` is derived from the raw bytes as received plus instance and destination:
whatever retries the mail (the sending MTA, the spool, an operator) can never create a second contact.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import regex

from gateway import contract
from gateway.mime import Mailbox, ParsedMail
from gateway.routing import TAG_ATTRIBUTE, Target

__all__ = [
    "EMPTY_BODY",
    "FALLBACK_SENDER",
    "StoredFile",
    "attachment_names",
    "build_request",
    "client_token",
    "mail_digest",
    "thread_ids",
]

FALLBACK_SENDER = "unknown-sender@mail-gateway.invalid"
EMPTY_BODY = "(This email has no text.)"
TRUNCATION_NOTE = "\n\n[The gateway shortened this body to fit Amazon Connect's size limit.]"

_CONTROL = regex.compile(r"\p{C}+")


@dataclass(frozen=True, slots=True)
class StoredFile:
    """An attachment as Connect will see it: its final name and a presigned URL to its bytes."""

    filename: str
    url: str


def mail_digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def client_token(raw: bytes, target: Target) -> str:
    """Same mail bytes, instance and destination: the same token, so Connect makes one contact."""
    digest = hashlib.sha256(raw)
    digest.update(b"\0" + target.route.instance_id.encode() + b"\0" + target.destination.casefold().encode())
    return digest.hexdigest()


def build_request(
    mail: ParsedMail,
    target: Target,
    raw: bytes,
    files: Sequence[StoredFile] = (),
    envelope_sender: str = "",
    related_contact_id: str | None = None,
) -> dict[str, Any]:
    """The request for one target. ``related_contact_id`` is the thread's contact, when one is known."""
    limits = contract.limits()
    route = target.route
    body, content_type = _body(mail)
    raw_message: dict[str, Any] = {"Subject": _clean(mail.subject)[: limits.subject_chars], "Body": body}
    raw_message["ContentType"] = content_type
    headers = _headers(mail)
    if headers:
        raw_message["Headers"] = headers
    request: dict[str, Any] = {
        "InstanceId": route.instance_id,
        "FromEmailAddress": _sender(mail, envelope_sender),
        "DestinationEmailAddress": target.destination,
        "EmailMessage": {"MessageSourceType": "RAW", "RawMessage": raw_message},
        "ClientToken": client_token(raw, target),
    }
    recipients = _additional_recipients(mail, target.destination)
    if recipients:
        request["AdditionalRecipients"] = recipients
    if files:
        request["Attachments"] = [
            {"FileName": f.filename, "S3Url": f.url} for f in files[: limits.attachments]
        ]
    attributes = dict(route.attributes)
    if target.tag:
        attributes[TAG_ATTRIBUTE] = target.tag
    optional = {
        "ContactFlowId": route.contact_flow_id,
        "Attributes": attributes,
        "SegmentAttributes": dict(route.segment_attributes),
        "References": dict(route.references),
        "Name": route.name,
        "Description": route.description,
        "RelatedContactId": _related_contact(mail, route.related_contact_header) or related_contact_id,
    }
    request.update({key: value for key, value in optional.items() if value})
    return request


def thread_ids(mail: ParsedMail) -> list[str]:
    """The messages this one answers, newest first: In-Reply-To, then References from the end."""
    ids = (mail.in_reply_to or "").split() + list(reversed(mail.references))
    return list(dict.fromkeys(ids))


def _related_contact(mail: ParsedMail, header: str | None) -> str | None:
    """The ContactId a trusted sender names in the route's header, if it is one Connect could accept."""
    if header is None:
        return None
    value = (mail.header(header) or "").strip()
    if not value or len(value) > 256 or _CONTROL.search(value) or " " in value:
        return None
    return value


def _clean(text: str) -> str:
    """One line of text without control or format characters (they are invisible or break layouts)."""
    return " ".join(_CONTROL.sub(" ", text).split())


def _fits_address(address: str) -> bool:
    limits = contract.limits()
    return len(address) <= limits.address_chars and contract.matches(limits.address_pattern, address)


def _mailbox(mailbox: Mailbox) -> dict[str, str]:
    info = {"EmailAddress": mailbox.address}
    name = _clean(mailbox.display_name)[: contract.limits().display_name_chars]
    if name:
        info["DisplayName"] = name
    return info


def _sender(mail: ParsedMail, envelope_sender: str) -> dict[str, str]:
    """The From header; else the envelope sender; else a documented placeholder (Connect needs one)."""
    if mail.sender and _fits_address(mail.sender.address):
        return _mailbox(mail.sender)
    if envelope_sender and _fits_address(envelope_sender):
        return _mailbox(Mailbox(envelope_sender, mail.sender.display_name if mail.sender else ""))
    return {"EmailAddress": FALLBACK_SENDER}


def _body(mail: ParsedMail) -> tuple[str, str]:
    if mail.html_body and mail.html_body.strip():
        return _fit_body(mail.html_body), "text/html"
    if mail.text_body and mail.text_body.strip():
        return _fit_body(mail.text_body), "text/plain"
    return EMPTY_BODY, "text/plain"


def _fit_body(body: str) -> str:
    """The body within 5 MiB of UTF-8, cut at a character boundary with a visible note when too long."""
    limits = contract.limits()
    budget = min(limits.body_bytes, limits.body_chars)
    encoded = body.encode("utf-8")
    if len(encoded) <= budget and len(body) <= limits.body_chars:
        return body
    room = budget - len(TRUNCATION_NOTE.encode("utf-8"))
    return encoded[:room].decode("utf-8", errors="ignore") + TRUNCATION_NOTE


def _headers(mail: ParsedMail) -> dict[str, str]:
    limit = contract.limits().header_value_chars
    headers: dict[str, str] = {}
    if mail.message_id and len(mail.message_id) <= limit:
        headers["MESSAGE_ID"] = mail.message_id
    if mail.in_reply_to and len(mail.in_reply_to) <= limit:
        headers["IN_REPLY_TO"] = mail.in_reply_to
    references = _most_recent(mail.references, limit)
    if references:
        headers["REFERENCES"] = references
    return headers


def _most_recent(ids: Sequence[str], limit: int) -> str:
    """The newest message ids (the end of References) that fit in ``limit`` characters, oldest first."""
    kept: list[str] = []
    size = 0
    for message_id in reversed(ids):
        size += len(message_id) + (1 if kept else 0)
        if size > limit:
            break
        kept.append(message_id)
    return " ".join(reversed(kept))


def _additional_recipients(mail: ParsedMail, destination: str) -> dict[str, list[dict[str, str]]]:
    """To and Cc except the destination (never Bcc), each address once, within Connect's counts."""
    limits = contract.limits()
    seen = {destination.casefold()}
    room = limits.additional_recipients
    result: dict[str, list[dict[str, str]]] = {}
    for key, mailboxes in (("ToAddresses", mail.to), ("CcAddresses", mail.cc)):
        chosen: list[dict[str, str]] = []
        for mailbox in _unique(mailboxes, seen):
            if room == 0 or len(chosen) == limits.recipients_per_list:
                break
            chosen.append(_mailbox(mailbox))
            room -= 1
        if chosen:
            result[key] = chosen
    return result


def _unique(mailboxes: Iterable[Mailbox], seen: set[str]) -> Iterable[Mailbox]:
    for mailbox in mailboxes:
        key = mailbox.address.casefold()
        if key not in seen and _fits_address(mailbox.address):
            seen.add(key)
            yield mailbox


def attachment_names(names: Iterable[str]) -> list[str]:
    """File names Connect accepts: no control characters, at most 256 characters, unique in the contact."""
    limit = contract.limits().file_name_chars
    taken: set[str] = set()
    result = []
    for index, original in enumerate(names, start=1):
        name = unicodedata.normalize("NFC", _clean(original).replace("/", "_").replace("\\", "_")).strip(". ")
        stem, extension = _split(name or f"attachment-{index}")
        candidate, number = _fit(stem, extension, "", limit), 1
        while candidate.casefold() in taken:
            number += 1
            candidate = _fit(stem, extension, f" ({number})", limit)
        taken.add(candidate.casefold())
        result.append(candidate)
    return result


def _split(name: str) -> tuple[str, str]:
    stem, extension = os.path.splitext(name)
    return (stem, extension) if stem and len(extension) <= 16 else (name, "")


def _fit(stem: str, extension: str, suffix: str, limit: int) -> str:
    """Cut the stem, never the extension or the number: the file still opens with the right program."""
    return stem[: limit - len(suffix) - len(extension)].rstrip() + suffix + extension
