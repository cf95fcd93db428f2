"""A raw message (bytes as received) into a :class:`ParsedMail`: the pure first stage of the mail's journey.

The parser is the standard library's, in its most forgiving mode (``compat32``: it records defects instead
of raising); header decoding, charsets and the choice of the body are this module's. Nothing here raises on
bad input: a message that breaks the MIME rules still yields its best reading.
"""

from __future__ import annotations

import email
import email.utils
import mimetypes
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from email.policy import compat32

from gateway.decoding import decode_bytes, decode_header

__all__ = ["Attachment", "Mailbox", "ParsedMail", "parse_mail"]


@dataclass(frozen=True, slots=True)
class Mailbox:
    address: str
    display_name: str = ""


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes = field(repr=False)
    content_id: str | None = None
    inline: bool = False


@dataclass(frozen=True)
class ParsedMail:
    subject: str = ""
    sender: Mailbox | None = None  # the From header
    reply_to: tuple[Mailbox, ...] = ()
    to: tuple[Mailbox, ...] = ()
    cc: tuple[Mailbox, ...] = ()
    message_id: str | None = None
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    text_body: str | None = None
    html_body: str | None = None
    attachments: tuple[Attachment, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()  # every header, decoded, in order

    def header(self, name: str) -> str | None:
        """The first header of that name (case-insensitive), decoded."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)


def parse_mail(raw: bytes) -> ParsedMail:
    message = email.message_from_bytes(raw, policy=compat32)
    charset = _first_charset(message)
    for part in message.walk():
        _decode_8bit_headers(part, charset)
    raw_headers = [(name, str(value)) for name, value in message.raw_items()]
    headers = tuple((name, decode_header(str(value), charset)) for name, value in raw_headers)

    def first(name: str) -> str | None:
        return next((str(v) for k, v in raw_headers if k.lower() == name), None)

    def mailboxes(*names: str) -> tuple[Mailbox, ...]:
        values = [str(v) for k, v in raw_headers if k.lower() in names]
        return tuple(_mailboxes(values, charset))

    body = _Body()
    attachments = list(_walk(message, body))
    senders = mailboxes("from")
    return ParsedMail(
        subject=decode_header(first("subject") or "", charset),
        sender=senders[0] if senders else None,
        reply_to=mailboxes("reply-to"),
        to=mailboxes("to"),
        cc=mailboxes("cc"),
        message_id=next(iter(_message_ids(first("message-id"))), None),
        in_reply_to=" ".join(_message_ids(first("in-reply-to"))) or None,
        references=tuple(_message_ids(first("references"))),
        text_body=body.text,
        html_body=body.html,
        attachments=tuple(attachments),
        headers=headers,
    )


_MESSAGE_ID = re.compile(r"<[^<>\s]+>")


def _message_ids(value: str | None) -> list[str]:
    """The ``<id>`` tokens of Message-ID, In-Reply-To or References, in order."""
    if not value:
        return []
    return _MESSAGE_ID.findall(decode_header(value))


def _decode_8bit_headers(part: Message, charset: str | None) -> None:
    """Raw 8-bit header bytes (kept by the parser as surrogate escapes) into text, in place.

    Done once up front so that the standard library's parameter parsing (RFC 2231 file names included)
    sees real text instead of replacement characters.
    """
    items = list(part.raw_items())
    if not any(_has_surrogates(str(value)) for _, value in items):
        return
    for name in {name for name, _ in items}:
        del part[name]
    for name, value in items:
        text = str(value)
        if _has_surrogates(text):
            text = decode_bytes(text.encode("ascii", "surrogateescape"), charset)
        part.set_raw(name, text)


def _has_surrogates(text: str) -> bool:
    return any("\udc80" <= char <= "\udcff" for char in text)


def _first_charset(message: Message) -> str | None:
    """The first charset the message declares: the best guess for raw 8-bit bytes in its headers."""
    for part in message.walk():
        charset = part.get_content_charset()
        if charset:
            return charset
    return None


_BARE_ADDRESS = re.compile(r"[^\s<>,;:\"()\[\]]+@[^\s<>,;:\"()\[\]]+")


def _mailboxes(values: list[str], charset: str | None) -> Iterator[Mailbox]:
    """Address header values into mailboxes; display names decoded after splitting (they may hold commas)."""
    for value in values:
        found = False
        for name, address in email.utils.getaddresses([value]):
            address = decode_header(address, charset).strip()
            if "@" not in address:
                continue
            found = True
            yield Mailbox(address, decode_header(name, charset).strip())
        if not found:  # a header the strict parser gives up on: keep whatever looks like an address
            for address in _BARE_ADDRESS.findall(decode_header(value, charset)):
                yield Mailbox(address)


class _Body:
    """The first plain-text and HTML bodies met in reading order."""

    def __init__(self) -> None:
        self.text: str | None = None
        self.html: str | None = None

    @property
    def found(self) -> bool:
        return self.text is not None or self.html is not None


def _is_attachment(part: Message) -> bool:
    disposition = (part.get("content-disposition") or "").split(";")[0].strip().lower()
    return disposition == "attachment" or (disposition != "inline" and part.get_filename() is not None)


def _walk(part: Message, body: _Body) -> Iterator[Attachment]:
    """Fill ``body`` and yield every part that is not the body, depth first, in reading order."""
    content_type = part.get_content_type()
    if content_type == "message/rfc822" or (part.is_multipart() and content_type.startswith("message/")):
        yield _embedded_message(part)
    elif part.is_multipart():
        children = [p for p in part.get_payload() if isinstance(p, Message)]
        if content_type == "multipart/alternative":
            yield from _walk_alternative(children, body)
        else:
            for child in children:
                yield from _walk(child, body)
    elif content_type in ("text/plain", "text/html") and not _is_attachment(part) and not body.found:
        text = _normalize_newlines(decode_bytes(_payload(part), part.get_content_charset()))
        if content_type == "text/html":
            body.html = text
        else:
            body.text = text
    else:
        yield _attachment(part)


def _walk_alternative(children: list[Message], body: _Body) -> Iterator[Attachment]:
    """Alternatives say one thing several ways: keep the richest reading as the body (and the plainer one
    beside it), and the files of the alternative that was read."""
    if body.found:  # an alternative after the body was read: keep it whole, lose nothing
        for child in children:
            yield from _walk(child, _Body())
        return
    chosen = False
    for child in sorted(children, key=_richness, reverse=True):
        inner = _Body()
        files = list(_walk(child, inner))
        if not inner.found:
            continue
        body.html = body.html if body.html is not None else inner.html
        body.text = body.text if body.text is not None else inner.text
        if not chosen:
            chosen = True
            yield from files


def _richness(part: Message) -> int:
    content_type = part.get_content_type()
    if content_type == "text/html" or content_type in ("multipart/related", "multipart/mixed"):
        return 2
    return 1 if content_type == "text/plain" else 0


def _normalize_newlines(text: str) -> str:
    """Bodies reach Connect with LF line ends, whatever the mail was sent with (CRLF, LF, even CR)."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _payload(part: Message) -> bytes:
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def _attachment(part: Message) -> Attachment:
    content_type = part.get_content_type()
    raw_name = part.get_filename()
    filename = decode_header(raw_name).strip() if raw_name else ""
    content_id = (part.get("content-id") or "").strip().strip("<>") or None
    if not filename:
        extension = mimetypes.guess_extension(content_type) or ".bin"
        filename = f"{(content_id or 'attachment').split('@')[0]}{extension}"
    disposition = (part.get("content-disposition") or "").split(";")[0].strip().lower()
    return Attachment(filename, content_type, _payload(part), content_id, inline=disposition == "inline")


def _embedded_message(part: Message) -> Attachment:
    """A forwarded message (``message/rfc822``) attached whole, named after its subject."""
    inner = part.get_payload()
    if isinstance(inner, list) and inner and isinstance(inner[0], Message):
        data = b"\r\n".join(m.as_bytes(policy=compat32) for m in inner if isinstance(m, Message))
        subject = decode_header(str(inner[0].get("subject") or "")).strip()
    else:
        data = _payload(part)
        subject = ""
    if part.get_content_type() != "message/rfc822":
        name = part.get_content_type().split("/")[1]
        return Attachment(f"{name}.txt", "text/plain", data)
    return Attachment(f"{subject or 'forwarded message'}.eml", "message/rfc822", data)
