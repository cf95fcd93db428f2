"""A raw message (bytes as received) into a :class:`ParsedMail`: the pure first stage of the mail's journey.

The parser is the standard library's, in its most forgiving mode (``compat32``: it records defects instead
of raising); header decoding and charsets are :mod:`.decoding`'s, the reading of the MIME tree
:mod:`.structure`'s. Nothing here raises on bad input: a message that breaks the MIME rules still yields
its best reading.
"""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import BinaryIO

from gateway.mail import ReceivedMail
from gateway.message.decoding import address_list, decode_bytes, decode_header
from gateway.message.folding import FoldingParser
from gateway.message.structure import Attachment, read_structure

__all__ = [
    "HEADER_BYTES",
    "Attachment",
    "Mailbox",
    "ParsedMail",
    "header_end",
    "header_message_id",
    "listed_message_id",
    "parse_mail",
    "received_message_id",
    "smtp_header_view",
]

CHUNK_BYTES = 65536  # the parser is fed this much at a time: it never sees the whole mail as one text
_HEADER_PARSER = BytesHeaderParser(policy=compat32)
HEADER_BYTES = 65536  # enough of a mail to find its Message-ID for logs and listings
MAX_MAILBOXES = 1000  # per header: far more than Connect takes, far fewer than a hostile header holds


@dataclass(frozen=True, slots=True)
class Mailbox:
    address: str
    display_name: str = ""


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
    report: str | None = None  # the fields of a delivery or feedback report, as text
    attachments: tuple[Attachment, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()  # every top-level header, decoded, in order

    def header(self, name: str) -> str | None:
        """The first header of that name (case-insensitive), decoded."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)


def parse_mail(raw: bytes | BinaryIO, *, received: bool = False) -> ParsedMail:
    """The mail's best reading, from its bytes or a file of them (read in chunks: a large mail is never
    held whole, nor as one decoded text). ``received``: the bytes came over SMTP (CRLF line ends), and the
    header section is read as the mail filters before the gateway read it (:func:`smtp_header_view`)."""
    message = _message(_chunks(raw, received), received)
    charset = _first_charset(message)
    for part in message.walk():
        _decode_8bit_headers(part, charset)
    raw_headers = [(name, str(value)) for name, value in message.raw_items()]
    headers = tuple((name, decode_header(value, charset)) for name, value in raw_headers)

    def first(name: str) -> str | None:
        return next((v for k, v in raw_headers if k.lower() == name), None)

    def mailboxes(name: str) -> tuple[Mailbox, ...]:
        values = [v for k, v in raw_headers if k.lower() == name]
        return tuple(_mailboxes(values))

    content = read_structure(message)
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
        text_body=content.text,
        html_body=content.html,
        report="\n\n".join(content.reports) or None,
        attachments=tuple(content.attachments),
        headers=headers,
    )


def _message(chunks: Iterator[bytes], received: bool) -> Message:
    """The standard library's parse of the chunks, fed as they come: what ``message_from_bytes`` does with
    the same bytes (it feeds its parser too), without first decoding the whole mail into one string, and
    with long runs of base64 lines folded while it reads (:mod:`.folding`).

    A received mail whose body the parser would keep as one string (:func:`_one_text_body`) gets it
    directly: the parser would first hold it as a list of line strings, a gigabyte for 40 MiB of 2-byte
    lines."""
    if received:
        head = next(chunks)
        headers = _HEADER_PARSER.parsebytes(head)
        if _one_text_body(headers):
            headers.set_payload(b"".join(chunks).decode("ascii", "surrogateescape"))
            return headers
        chunks = itertools.chain([head], chunks)
    parser = FoldingParser()
    for chunk in chunks:
        parser.feed(chunk)
    return parser.close()


def _one_text_body(headers: Message) -> bool:
    """Whether the parser makes the rest of the mail after ``headers`` its payload, as it is: the header
    section ended at its empty line (no line of it was left over as body) and the type is not one whose
    body the parser reads further (multipart, message)."""
    return headers.get_payload() == "" and headers.get_content_maintype() not in ("multipart", "message")


def _chunks(raw: bytes | BinaryIO, received: bool) -> Iterator[bytes]:
    """The mail in chunks, its header section first (as :func:`smtp_header_view` reads it when
    ``received``)."""
    if isinstance(raw, bytes):
        raw = io.BytesIO(raw)
    if received:
        head, rest = _header_section(raw)
        yield smtp_header_view(head)
        yield rest
    while chunk := raw.read(CHUNK_BYTES):
        yield chunk


def _header_section(raw: BinaryIO) -> tuple[bytes, bytes]:
    """The header section as :func:`header_end` bounds it, and what was read past it; in linear time, each
    chunk searched once (the front door refuses a header section over its limit, but a reader must not
    depend on that to stay linear)."""
    head = bytearray()
    while chunk := raw.read(CHUNK_BYTES):
        start = max(0, len(head) - 3)  # the blank line may straddle two chunks
        head += chunk
        found = head.find(b"\r\n\r\n", start)
        if found >= 0:
            return bytes(head[: found + 4]), bytes(head[found + 4 :])
    return bytes(head), b""


_MESSAGE_ID = re.compile(r"<[^<>\s]+>")


_BARE_CR = re.compile(rb"\r(?!\n)")


def header_end(raw: bytes) -> int:
    """Where the header section of SMTP-received bytes ends (after its empty line), or the length."""
    end = raw.find(b"\r\n\r\n")
    return len(raw) if end < 0 else end + 4


def smtp_header_view(raw: bytes) -> bytes:
    """The bytes with every bare CR of the header section read as a space, as Postfix and the milters in
    front of the gateway read it: a CR alone is no line end there, so no header can hide inside another
    (``X-Note: hi<CR>From: CEO``) and the agent sees the ``From:`` a DKIM/DMARC filter saw. The body, and
    the raw bytes the gateway keeps and hashes, are untouched."""
    end = header_end(raw)
    head = raw[:end]
    if b"\r" not in head.replace(b"\r\n", b""):
        return raw
    return _BARE_CR.sub(b" ", head) + raw[end:]


def header_message_id(raw: bytes) -> str | None:
    """The Message-ID from the header alone (cheap: for logs and listings, not for the contact)."""
    return listed_message_id(_HEADER_PARSER.parsebytes(smtp_header_view(raw[:HEADER_BYTES])))


def listed_message_id(headers: Message) -> str | None:
    """The Message-ID as listings and logs name it, from a parsed header section."""
    value = headers.get("message-id")
    return str(value).strip()[:998] if value else None


def received_message_id(mail: ReceivedMail) -> str | None:
    """A received mail's Message-ID for listings and logs: the front door's reading, or the header's."""
    if mail.message_id_known:
        return mail.message_id
    return header_message_id(mail.content.head(HEADER_BYTES))


def _message_ids(value: str | None) -> list[str]:
    """The ``<id>`` tokens of Message-ID, In-Reply-To or References, in order."""
    if not value:
        return []
    return _MESSAGE_ID.findall(decode_header(value))


def _first_charset(message: Message) -> str | None:
    """The first charset the message declares: the best guess for raw 8-bit bytes in its headers."""
    for part in message.walk():
        try:
            charset = part.get_content_charset()
        except Exception:  # a malformed RFC 2231 charset parameter
            charset = None
        if charset:
            return charset
    return None


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


def _mailboxes(values: list[str]) -> Iterator[Mailbox]:
    """Address header values into mailboxes; display names decoded after splitting (they may hold commas)."""
    count = 0
    for value in values:
        for name, address in address_list(value):
            if count == MAX_MAILBOXES:
                return
            count += 1
            yield Mailbox(address, name)
