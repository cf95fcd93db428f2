"""What the front door checks in a mail's header before it accepts it, and what kind of mail it is.

Loops: more ``Received`` headers than ``max_received_headers`` (``554 5.4.6``), or the gateway's own loop
marker (:data:`~gateway.message.automatic.LOOP_HEADER`, on everything the gateway sends). Sizes: the header
section, and the number of MIME parts and how deeply they nest, counted as the parser will see them
(:mod:`gateway.message.shape`), so that no mail the gateway accepts costs more to read than its limits
allow. The header section is read as the filters before the gateway read it (a bare CR is no line end).
And whether a machine wrote it
(:func:`~gateway.message.automatic.classify`), for the automatic-mail policy. Pure functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32

from gateway.mail import MailContent
from gateway.message.automatic import LOOP_HEADER, Automatic, classify
from gateway.message.mime import header_end, listed_message_id, smtp_header_view
from gateway.message.shape import measure
from gateway.replies import Replies, Reply
from gateway.settings import LimitSettings

__all__ = ["Triage", "screen"]


@dataclass(frozen=True)
class Triage:
    refusal: Reply | None
    automatic: Automatic
    received: int
    message_id: str | None = None  # as the spool lists it and the logs name it: read here, not again
    message_id_known: bool = False  # the header was read (``message_id`` None: it has none)


def screen(content: MailContent, sender: str, limits: LimitSettings, hostname: str) -> Triage:
    """The front door's verdict on a received mail: a refusal, or None; and what kind of mail it is.

    It reads the header section and scans the whole mail once for its shape (from a memory map when the
    mail is in a file); a large mail's caller runs it off the event loop."""
    head = content.head(limits.max_header_size + 4)
    block = head[: header_end(head)]
    if len(block) > limits.max_header_size:
        return Triage(Replies.HEADER_TOO_BIG.format(limit=limits.max_header_size), Automatic.NO, 0)
    view = smtp_header_view(block)
    parsed = BytesHeaderParser(policy=compat32).parsebytes(view)
    headers = [(name, str(value)) for name, value in parsed.raw_items()]
    received = sum(1 for name, _ in headers if name.lower() == "received")
    automatic = classify(headers, sender)
    message_id = listed_message_id(parsed)

    def read(refusal: Reply | None) -> Triage:
        """The verdict, with what the header said: the Message-ID goes with the mail, read once."""
        return Triage(refusal, automatic, received, message_id, message_id_known=True)

    if received > limits.max_received_headers:
        return read(Replies.TOO_MANY_HOPS.format(count=received))
    if any(name.lower() == LOOP_HEADER.lower() and value.strip() == hostname for name, value in headers):
        return read(Replies.LOOP)
    top = parsed if view is block else None  # read as the scan reads it: no bare CR made a space
    with content.view() as data:
        shape = measure(data, max_parts=limits.max_mime_parts, max_depth=limits.max_nesting, top=top)
    if shape.depth > limits.max_nesting:
        return read(Replies.NESTED_TOO_DEEP.format(limit=limits.max_nesting))
    if shape.parts > limits.max_mime_parts:
        return read(Replies.TOO_MANY_PARTS.format(limit=limits.max_mime_parts))
    return read(None)
