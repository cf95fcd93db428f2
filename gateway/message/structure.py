"""Reading a MIME tree: which parts are the body, which are files, and what a report says.

Rules, in the order the tree is read:

* ``multipart/alternative``: every version is read; the HTML and the plain text of the versions that have
  them are both kept (the contact takes the one the configuration prefers), and only the files of the
  version that gave the body are kept, except non-text versions (a ``text/calendar`` invitation), which
  are always kept as files;
* ``multipart/related``: the root part (``start``, else the first) is read for the body, the other parts
  (inline images referenced by ``cid:``) become files;
* ``multipart/signed`` (S/MIME, PGP): the signed content is read as if unsigned, the signature is a file;
* ``multipart/mixed``, ``report`` and the rest: children in order; further inline text joins the body;
* ``message/rfc822``: a file named after its subject (``<subject>.eml``);
* ``message/delivery-status`` and other machine-readable reports: their fields join the body as text, so a
  bounce is readable;
* winmail.dat (TNEF): opened into its real files, and its body used when the mail has no other;
* any other leaf: a file, ``text/calendar`` as ``.ics``.
"""

from __future__ import annotations

import importlib
import mimetypes
from collections.abc import Callable
from dataclasses import dataclass, field
from email import errors
from email.message import Message
from email.policy import compat32

from gateway.message.decoding import decode_bytes, decode_header
from gateway.message.tnef import is_tnef, read_tnef

# How get_payload(decode=True) decodes base64 text (the module is private and has no type stubs).
_decode_b: Callable[[bytes], tuple[bytes, list[errors.MessageDefect]]] = importlib.import_module(
    "email._encoded_words"
).decode_b

__all__ = ["Attachment", "Content", "read_structure"]

REPORT_TYPES = (
    "message/delivery-status",
    "message/global-delivery-status",
    "message/disposition-notification",
    "message/feedback-report",
)
MAX_DEPTH = 64  # deeper nesting than any real mail; a hostile one is read only this far (the rest is a file)
# Names for parts that carry none: what a person would call the file.
_UNNAMED = {
    "text/calendar": "invite.ics",
    "application/ics": "invite.ics",
    "application/pgp-signature": "signature.asc",
    "application/pkcs7-signature": "smime.p7s",
    "application/x-pkcs7-signature": "smime.p7s",
    "application/pkcs7-mime": "smime.p7m",
    "text/plain": "text.txt",
    "text/html": "page.html",
    "text/rfc822-headers": "original-headers.txt",
    "image/jpeg": "image.jpg",
}


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes = field(repr=False)
    content_id: str | None = None
    inline: bool = False


@dataclass
class Content:
    """What the tree holds: the bodies found, report text, and every other part as a file."""

    text: str | None = None
    html: str | None = None
    reports: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    # Further inline text and HTML that join the body, joined once at the end: appending to a string
    # part by part would cost time quadratic in the number of parts.
    more_text: list[str] = field(default_factory=list)
    more_html: list[str] = field(default_factory=list)

    @property
    def has_body(self) -> bool:
        return self.text is not None or self.html is not None

    def finished(self) -> Content:
        if self.more_text:
            self.text = "\n".join([self.text or "", *self.more_text])
            self.more_text = []
        if self.more_html:
            self.html = "\n".join([self.html or "", *self.more_html])
            self.more_html = []
        return self


def read_structure(message: Message) -> Content:
    """The mail's bodies, files and reports. Reads the message once: each file's encoded payload is
    dropped from it as soon as it is decoded."""
    content = Content()
    _read(message, content, 0)
    return content.finished()


def _disposition(part: Message) -> str:
    return str(part.get("content-disposition") or "").split(";")[0].strip().lower()


def _is_file(part: Message) -> bool:
    disposition = _disposition(part)
    return disposition == "attachment" or (disposition != "inline" and part.get_filename() is not None)


def _payload(part: Message) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except Exception:  # a broken transfer encoding: keep the raw payload
        data = str(part.get_payload()).encode("utf-8", "surrogateescape")
    return data if isinstance(data, bytes) else b""


def _taken_payload(part: Message) -> bytes:
    """A file's decoded bytes, its encoded text taken out of the part first (read once, it is not held
    again). A base64 text is decoded as ``get_payload(decode=True)`` decodes it, but from one copy at a
    time: the library holds the text, its bytes, a list of its lines and their join at once (46 instead
    of 29 MiB at the peak of a reader's parse of five 3.7 MB files)."""
    payload = vars(part).get("_payload")  # the text as the parser stored it
    if not (
        isinstance(payload, str)
        and payload.isascii()  # else the library's own ways (surrogates, raw-unicode-escape)
        and str(part.get("content-transfer-encoding", "")).lower() == "base64"  # the library's test
    ):
        data = _payload(part)
        part.set_payload("")
        return data
    part.set_payload("")
    encoded = payload.encode("ascii")
    del payload
    joined = encoded.translate(None, b"\r\n")  # b"".join(encoded.splitlines()): bytes split only there
    del encoded
    data, defects = _decode_b(joined)
    for defect in defects:
        part.policy.handle_defect(part, defect)
    return data


def _newlines(text: str) -> str:
    """Bodies reach Connect with LF line ends, whatever the mail was sent with (CRLF, LF, even CR)."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _text_of(part: Message) -> str:
    return _newlines(decode_bytes(_payload(part), part.get_content_charset()))


def _children(part: Message) -> list[Message]:
    payload = part.get_payload()
    return [child for child in payload if isinstance(child, Message)] if isinstance(payload, list) else []


def _read(part: Message, content: Content, depth: int) -> None:
    content_type = part.get_content_type()
    if depth > MAX_DEPTH:
        content.attachments.append(_as_file(part, _serialized(part)))
    elif content_type == "message/rfc822":
        content.attachments.append(_embedded_message(part))
    elif content_type in REPORT_TYPES:
        content.reports.append(_report_text(part))
    elif content_type.startswith("message/"):
        content.attachments.append(_as_file(part, _serialized_payload(part), "text/plain"))
    elif part.is_multipart():
        _read_multipart(part, content_type, content, depth)
    elif is_tnef(content_type, part.get_filename()):
        _read_tnef(part, content)
    elif content_type in ("text/plain", "text/html") and not _is_file(part):
        _read_text(part, content_type, content)
    else:
        content.attachments.append(_as_file(part, _taken_payload(part)))


def _read_multipart(part: Message, content_type: str, content: Content, depth: int) -> None:
    children = _children(part)
    if content_type == "multipart/alternative" and children:
        _read_alternative(children, content, depth)
    elif content_type == "multipart/related" and children:
        root = _related_root(part, children)
        _read(root, content, depth + 1)
        for child in children:
            if child is not root:
                _read(child, _files_only(content), depth + 1)
    else:
        for child in children:
            _read(child, content, depth + 1)


def _files_only(content: Content) -> Content:
    """A view that files everything, bodies included (they are resources of a related root)."""
    return Content(text="", html="", reports=content.reports, attachments=content.attachments)


def _related_root(part: Message, children: list[Message]) -> Message:
    start = str(part.get_param("start") or "").strip("<> ")
    if start:
        for child in children:
            if str(child.get("content-id") or "").strip("<> ") == start:
                return child
    return children[0]


def _read_alternative(children: list[Message], content: Content, depth: int) -> None:
    if content.has_body:  # alternatives after the body was found: kept whole, nothing lost
        for child in children:
            _read(child, content, depth + 1)
        return
    versions = []
    for child in children:
        version = Content()
        _read(child, version, depth + 1)
        versions.append(version.finished())
    html = next((v for v in reversed(versions) if v.html is not None), None)  # the last is the richest
    text = next((v for v in versions if v.text is not None), None)
    chosen = html or text
    content.html = html.html if html else None
    content.text = text.text if text else None
    for version in versions:
        content.reports.extend(version.reports)
        if version is chosen or not version.has_body:  # a calendar version has no body: keep its file
            content.attachments.extend(version.attachments)


def _read_text(part: Message, content_type: str, content: Content) -> None:
    text = _text_of(part)
    if content_type == "text/html":
        if content.html is None:
            content.html = text
        elif content.html:  # more inline HTML after the body: it belongs to the body
            content.more_html.append(text)
        else:
            content.attachments.append(_as_file(part, _payload(part)))
    elif content.text is None:
        content.text = text
    elif content.text:  # more inline text after the body (Apple Mail: text, image, text)
        content.more_text.append(text)
    else:
        content.attachments.append(_as_file(part, _payload(part)))


def _read_tnef(part: Message, content: Content) -> None:
    opened = read_tnef(_payload(part))
    if opened is None:
        content.attachments.append(_as_file(part, _payload(part)))
        return
    for file in opened.files:
        content.attachments.append(Attachment(file.filename, file.content_type, file.data))
    if opened.rtf is not None:
        content.attachments.append(Attachment("body.rtf", "application/rtf", opened.rtf))
    if content.html is None and opened.html:  # Outlook's outer text/plain is a flat copy of this
        content.html = _newlines(opened.html)
    if content.text is None:
        text = opened.text or opened.rtf_as_text()
        content.text = _newlines(text) if text else None


def _filename(part: Message) -> str:
    try:
        raw = part.get_filename()
    except Exception:  # malformed RFC 2231 parameters
        raw = None
    return decode_header(str(raw)).strip() if raw else ""


def _as_file(part: Message, data: bytes, content_type: str | None = None) -> Attachment:
    content_type = content_type or part.get_content_type()
    content_id = str(part.get("content-id") or "").strip().strip("<>") or None
    filename = _filename(part)
    if not filename:
        known = _UNNAMED.get(content_type)
        extension = mimetypes.guess_extension(content_type) or ".bin"
        stem = (content_id or "").split("@")[0]
        filename = f"{stem}{extension}" if stem else known or f"attachment{extension}"
    return Attachment(filename, content_type, data, content_id, inline=_disposition(part) == "inline")


def _serialized(message: Message) -> bytes:
    try:
        return message.as_bytes(policy=compat32)
    except Exception:  # a tree the generator cannot write back: its text, as well as can be
        return str(message.get_payload()).encode("utf-8", "surrogateescape")


def _serialized_payload(part: Message) -> bytes:
    inner = part.get_payload()
    if isinstance(inner, list):
        return b"\r\n".join(_serialized(m) for m in inner if isinstance(m, Message))
    return _payload(part)


def _embedded_message(part: Message) -> Attachment:
    """A forwarded message attached whole, named after its subject."""
    inner = part.get_payload()
    if isinstance(inner, list) and inner and isinstance(inner[0], Message):
        subject = decode_header(str(inner[0].get("subject") or "")).strip()
        data = _serialized(inner[0])
    else:
        subject, data = "", _payload(part)
    return (
        _as_file(part, data, "message/rfc822")
        if _filename(part)
        else Attachment(f"{subject or 'forwarded message'}.eml", "message/rfc822", data)
    )


def _report_text(part: Message) -> str:
    """The fields of a machine-readable report, as a reader sees them."""
    inner = part.get_payload()
    if isinstance(inner, list):
        blocks = [
            "\n".join(f"{k}: {decode_header(str(v))}" for k, v in m.items())
            for m in inner
            if isinstance(m, Message)
        ]
        return "\n\n".join(block for block in blocks if block)
    return _text_of(part)
