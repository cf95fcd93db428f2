"""Outlook's winmail.dat (TNEF) opened up: its real attachments and its body.

Outlook wraps rich mail in ``application/ms-tnef``; a help desk that forwards winmail.dat as it is leaves
the agent with a file nobody can open. ``tnefparse`` reads the container (``compressed_rtf`` inflates the
RTF body); an RTF body becomes readable text with ``striprtf``. A container that cannot be read is kept
whole: the caller attaches it unchanged.
"""

from __future__ import annotations

import logging
import mimetypes
from dataclasses import dataclass

from striprtf.striprtf import rtf_to_text
from tnefparse import TNEF

__all__ = ["TnefContent", "TnefFile", "is_tnef", "read_tnef"]

log = logging.getLogger(__name__)

TNEF_TYPES = ("application/ms-tnef", "application/vnd.ms-tnef")


@dataclass(frozen=True)
class TnefFile:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class TnefContent:
    files: tuple[TnefFile, ...]
    html: str | None = None
    text: str | None = None
    rtf: bytes | None = None  # the RTF body as Outlook wrote it

    def rtf_as_text(self) -> str | None:
        """The RTF body as plain text, for when it is the only body there is."""
        if self.rtf is None:
            return None
        try:
            converted: str = rtf_to_text(self.rtf.decode("cp1252", errors="replace"), errors="ignore")  # type: ignore[no-untyped-call]
            return _text(converted, None)
        except Exception:  # striprtf on hostile RTF: the RTF itself is still attached
            return None

    @property
    def body_names(self) -> list[str]:
        """Names the body would carry as files, as MimeKit names them (body.rtf, body.html, body.txt)."""
        names = []
        if self.rtf:
            names.append("body.rtf")
        if self.html:
            names.append("body.html")
        if self.text:
            names.append("body.txt")
        return names


def is_tnef(content_type: str, filename: str | None) -> bool:
    return content_type in TNEF_TYPES or (filename or "").strip().lower() == "winmail.dat"


def _text(value: object, codepage: str | None) -> str | None:
    if isinstance(value, bytes):
        value = value.decode(codepage or "cp1252", errors="replace")
    if not isinstance(value, str):
        return None
    value = value.rstrip("\x00")
    return value if value.strip() else None


def read_tnef(data: bytes) -> TnefContent | None:
    """The container's files and body; None when it cannot be read at all."""
    try:
        container = TNEF(data)
    except Exception as error:  # a damaged container is kept whole by the caller; never a crash
        log.info("winmail.dat could not be read (%s); it is kept as it is", error)
        return None
    codepage = getattr(container, "codepage", None)
    files = []
    for attachment in container.attachments:
        name = (attachment.long_filename() or attachment.name or "").strip("\x00 ") or "Untitled Attachment"
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        payload = attachment.data if isinstance(attachment.data, bytes) else b""
        files.append(TnefFile(name, content_type, payload))
    rtf = container.rtfbody
    if not (isinstance(rtf, bytes) and rtf.startswith(b"{\\rtf")):
        rtf = None  # absent, or still compressed (compressed_rtf missing)
    return TnefContent(
        tuple(files), _text(container.htmlbody, codepage), _text(container.body, codepage), rtf
    )
