"""A fitted mail and its target into the ``StartEmailContact`` request: pure, and always within the contract.

:mod:`gateway.contact.fitting` has already cut what Connect cannot take; this module fills in the addresses,
headers and route settings, and links the stored original when something was left out. The
``ClientToken`` is derived from the raw bytes as received plus instance and destination: whatever retries
the mail (the sending MTA, the spool, an operator) can never create a second contact.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from gateway.contact import contract
from gateway.contact.fitting import FittedMail, clean_line
from gateway.contact.routing import TAG_ATTRIBUTE
from gateway.mail import Target
from gateway.message.automatic import AUTOMATIC_ATTRIBUTE, Automatic, classify

if TYPE_CHECKING:
    from types_aiobotocore_connect.literals import EmailHeaderTypeType
    from types_aiobotocore_connect.type_defs import (
        EmailAddressInfoTypeDef,
        InboundAdditionalRecipientsTypeDef,
        InboundRawMessageTypeDef,
        ReferenceTypeDef,
        StartEmailContactRequestTypeDef,
    )
from gateway.message.mime import Mailbox, ParsedMail

__all__ = [
    "FALLBACK_SENDER",
    "OMITTED_REFERENCE",
    "ORIGINAL_REFERENCE",
    "WITHOUT_ATTACHMENTS",
    "MailHash",
    "StoredFile",
    "Verdicts",
    "build_request",
    "client_token",
    "mail_digest",
    "thread_ids",
]

FALLBACK_SENDER = "unknown-sender@mail-gateway.invalid"
ORIGINAL_REFERENCE = "Original email"
OMITTED_REFERENCE = "Not in this contact"
WITHOUT_ATTACHMENTS = "without-attachments"  # the ClientToken variant when Connect refused the attachments


@dataclass(frozen=True, slots=True)
class StoredFile:
    """An attachment as Connect will see it: its final name and a presigned URL to its bytes."""

    filename: str
    url: str


@dataclass(frozen=True)
class Verdicts:
    """What the gateway's own checks found (:mod:`gateway.trust`), as the contact carries it: Connect's
    ``X_SES_SPAM_VERDICT`` / ``X_SES_VIRUS_VERDICT`` headers and ``gateway_*`` attributes. Kept beside
    the raw mail, never written into it, so that the ClientToken stays the digest of the bytes received."""

    headers: Mapping[str, str] = field(default_factory=dict)
    attributes: Mapping[str, str] = field(default_factory=dict)


class MailHash:
    """SHA-256 of the mail's bytes as received, taken once (a large mail is read from its file in chunks):
    the S3 keys use its hex digest, and each contact's ClientToken continues it with the target."""

    __slots__ = ("_state",)

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._state = hashlib.sha256()
        for chunk in chunks:
            self._state.update(chunk)

    @classmethod
    def of(cls, raw: bytes | MailHash) -> MailHash:
        return raw if isinstance(raw, MailHash) else cls((raw,))

    @property
    def hexdigest(self) -> str:
        return self._state.hexdigest()

    def continued(self, more: bytes) -> str:
        digest = self._state.copy()
        digest.update(more)
        return digest.hexdigest()


def mail_digest(raw: bytes | MailHash) -> str:
    return MailHash.of(raw).hexdigest


def client_token(raw: bytes | MailHash, target: Target, variant: str = "") -> str:
    """Same mail bytes, instance and destination: the same token, so Connect makes one contact.

    A ``variant`` (a request deliberately made different, such as one without its refused attachments)
    gets a token of its own, as deterministic as the first."""
    suffix = b"\0" + target.route.instance_id.encode() + b"\0" + target.destination.casefold().encode()
    if variant:
        suffix += b"\0" + variant.encode()
    return MailHash.of(raw).continued(suffix)


def build_request(
    fitted: FittedMail,
    target: Target,
    raw: bytes | MailHash,
    files: Sequence[StoredFile] = (),
    envelope_sender: str | None = None,
    related_contact_id: str | None = None,
    original: str | None = None,
    variant: str = "",
    verdicts: Verdicts | None = None,
) -> StartEmailContactRequestTypeDef:
    """The request for one target.

    ``files`` are the fitted attachments with their URLs; ``related_contact_id`` is the thread's contact
    when one is known; ``original`` locates the stored original message (linked from the contact);
    ``verdicts`` the gateway's spam, virus and sender-authentication results."""
    mail = fitted.mail
    route = target.route
    raw_message: InboundRawMessageTypeDef = {
        "Subject": fitted.subject,
        "Body": fitted.body,
        "ContentType": fitted.content_type,
    }
    headers = _headers(mail)
    if verdicts is not None:
        headers.update(_verdict_headers(verdicts.headers))
    if headers:
        raw_message["Headers"] = headers
    request: StartEmailContactRequestTypeDef = {
        "InstanceId": route.instance_id,
        "FromEmailAddress": _sender(mail, envelope_sender, route.sender_from_reply_to),
        "DestinationEmailAddress": target.destination,
        "EmailMessage": {"MessageSourceType": "RAW", "RawMessage": raw_message},
        "ClientToken": client_token(raw, target, variant),
    }
    recipients = _additional_recipients(mail, target.destination)
    if recipients:
        request["AdditionalRecipients"] = recipients
    if files:
        request["Attachments"] = [{"FileName": f.filename, "S3Url": f.url} for f in files]
    attributes = dict(route.attributes)
    automatic = classify(mail.headers, envelope_sender)
    if automatic is not Automatic.NO:
        attributes[AUTOMATIC_ATTRIBUTE] = automatic.value
    if target.tag:
        attributes[TAG_ATTRIBUTE] = target.tag
    if verdicts is not None:
        _add_within_limit(attributes, verdicts.attributes)
    if route.contact_flow_id:
        request["ContactFlowId"] = route.contact_flow_id
    if attributes:
        request["Attributes"] = attributes
    if route.segment_attributes:
        request["SegmentAttributes"] = dict(route.segment_attributes)
    references = _references(route.references, original, fitted.omissions)
    if references:
        request["References"] = references
    if route.name:
        request["Name"] = route.name
    if route.description:
        request["Description"] = route.description
    related = _related_contact(mail, route.related_contact_header) or related_contact_id
    if related:
        request["RelatedContactId"] = related
    return request


def _references(
    static: Mapping[str, Any], original: str | None, omissions: Sequence[str]
) -> dict[str, ReferenceTypeDef]:
    """The route's references, then the original's locator and what was left out, within 4,096 bytes.

    What was left out is named even when no original was kept (``store_original = "never"``, or a mail
    whose infected files were stripped): the agent must know the contact is not the whole mail."""
    references: dict[str, ReferenceTypeDef] = dict(static)
    if original is not None:
        references[ORIGINAL_REFERENCE] = {"Type": "URL", "Value": original}
    if omissions:
        used = sum(len(k.encode()) + len(str(v.get("Value", "")).encode()) for k, v in references.items())
        room = contract.limits().references_bytes - used - len(OMITTED_REFERENCE.encode())
        summary = "; ".join(omissions)
        if len(summary.encode()) > room:
            summary = summary.encode()[: max(0, room - 3)].decode("utf-8", "ignore") + "..."
        references[OMITTED_REFERENCE] = {"Type": "STRING", "Value": summary}
    return references


def thread_ids(mail: ParsedMail) -> list[str]:
    """The messages this one answers, newest first: In-Reply-To, then References from the end."""
    ids = (mail.in_reply_to or "").split() + list(reversed(mail.references))
    return list(dict.fromkeys(ids))


def _related_contact(mail: ParsedMail, header: str | None) -> str | None:
    """The ContactId a trusted sender names in the route's header, if it is one Connect could accept."""
    if header is None:
        return None
    value = (mail.header(header) or "").strip()
    if not value or len(value) > 256 or clean_line(value) != value or " " in value:
        return None
    return value


def _fits_address(address: str) -> bool:
    limits = contract.limits()
    return len(address) <= limits.address_chars and contract.matches(limits.address_pattern, address)


def _mailbox(mailbox: Mailbox) -> EmailAddressInfoTypeDef:
    info: EmailAddressInfoTypeDef = {"EmailAddress": mailbox.address}
    name = clean_line(mailbox.display_name)[: contract.limits().display_name_chars]
    if name:
        info["DisplayName"] = name
    return info


def _sender(mail: ParsedMail, envelope_sender: str | None, from_reply_to: bool) -> EmailAddressInfoTypeDef:
    """The customer: Reply-To when the route says so (web forms send from noreply@), else From; else the
    envelope sender; else a documented placeholder (Connect needs one)."""
    candidates = [*mail.reply_to[:1]] if from_reply_to else []
    if mail.sender is not None:
        candidates.append(mail.sender)
    for mailbox in candidates:
        if _fits_address(mailbox.address):
            return _mailbox(mailbox)
    if envelope_sender and _fits_address(envelope_sender):
        return _mailbox(Mailbox(envelope_sender, mail.sender.display_name if mail.sender else ""))
    return {"EmailAddress": FALLBACK_SENDER}


def _headers(mail: ParsedMail) -> dict[EmailHeaderTypeType, str]:
    limit = contract.limits().header_value_chars
    headers: dict[EmailHeaderTypeType, str] = {}
    if mail.message_id and len(mail.message_id) <= limit:
        headers["MESSAGE_ID"] = mail.message_id
    if mail.in_reply_to and len(mail.in_reply_to) <= limit:
        headers["IN_REPLY_TO"] = mail.in_reply_to
    references = _most_recent(mail.references, limit)
    if references:
        headers["REFERENCES"] = references
    return headers


def _verdict_headers(values: Mapping[str, str]) -> dict[EmailHeaderTypeType, str]:
    """Only the header names Connect's model takes, with values within its length."""
    limits = contract.limits()
    return {
        cast("EmailHeaderTypeType", name): value
        for name, value in values.items()
        if name in limits.header_names and 1 <= len(value) <= limits.header_value_chars
    }


def _add_within_limit(attributes: dict[str, str], extra: Mapping[str, str]) -> None:
    """The gateway's attributes win over a route's of the same name; one that would not fit in Connect's
    32 KiB of attributes is left out (a route's attributes are checked at start, these are small)."""
    size = sum(len(k.encode()) + len(v.encode()) for k, v in attributes.items())
    for name, value in extra.items():
        old = attributes.get(name)
        grown = size + len(name.encode()) + len(value.encode())
        if old is not None:
            grown -= len(name.encode()) + len(old.encode())
        if grown <= contract.limits().attributes_bytes:
            attributes[name] = value
            size = grown


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


def _additional_recipients(mail: ParsedMail, destination: str) -> InboundAdditionalRecipientsTypeDef:
    """To and Cc except the destination (never Bcc), each address once, within Connect's counts."""
    limits = contract.limits()
    seen = {destination.casefold()}
    room = limits.additional_recipients
    lists: list[list[EmailAddressInfoTypeDef]] = []
    for mailboxes in (mail.to, mail.cc):
        chosen: list[EmailAddressInfoTypeDef] = []
        for mailbox in _unique(mailboxes, seen):
            if room == 0 or len(chosen) == limits.recipients_per_list:
                break
            chosen.append(_mailbox(mailbox))
            room -= 1
        lists.append(chosen)
    result: InboundAdditionalRecipientsTypeDef = {}
    if lists[0]:
        result["ToAddresses"] = lists[0]
    if lists[1]:
        result["CcAddresses"] = lists[1]
    return result


def _unique(mailboxes: Iterable[Mailbox], seen: set[str]) -> Iterable[Mailbox]:
    for mailbox in mailboxes:
        key = mailbox.address.casefold()
        if key not in seen and _fits_address(mailbox.address):
            seen.add(key)
            yield mailbox
