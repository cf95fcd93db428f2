"""What the front door checks in a mail's header before it accepts it, and what kind of mail it is.

Loops: more ``Received`` headers than ``max_received_headers`` (``554 5.4.6``), or the gateway's own loop
marker (:data:`~gateway.message.automatic.LOOP_HEADER`, on everything the gateway sends). Sizes: the header
section and the number of MIME parts. And whether a machine wrote it
(:func:`~gateway.message.automatic.classify`), for the automatic-mail policy. Pure functions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32

from gateway.mail import MailContent
from gateway.message.automatic import LOOP_HEADER, Automatic, classify
from gateway.replies import Replies, Reply
from gateway.settings import LimitSettings

__all__ = ["Triage", "screen"]

_PART_HEADER = re.compile(rb"(?im)^content-type:")


@dataclass(frozen=True)
class Triage:
    refusal: Reply | None
    automatic: Automatic
    received: int


def _header_block(raw: bytes) -> bytes:
    for separator in (b"\r\n\r\n", b"\n\n"):
        end = raw.find(separator)
        if end >= 0:
            return raw[: end + len(separator)]
    return raw


def screen(content: MailContent, sender: str, limits: LimitSettings, hostname: str) -> Triage:
    """The front door's verdict on a received mail: a refusal, or None; and what kind of mail it is."""
    raw = content.read()
    block = _header_block(raw)
    if len(block) > limits.max_header_size:
        return Triage(Replies.HEADER_TOO_BIG.format(limit=limits.max_header_size), Automatic.NO, 0)
    parsed = BytesHeaderParser(policy=compat32).parsebytes(block)
    headers = [(name, str(value)) for name, value in parsed.raw_items()]
    received = sum(1 for name, _ in headers if name.lower() == "received")
    automatic = classify(headers, sender)
    if received > limits.max_received_headers:
        return Triage(Replies.TOO_MANY_HOPS.format(count=received), automatic, received)
    if any(name.lower() == LOOP_HEADER.lower() and value.strip() == hostname for name, value in headers):
        return Triage(Replies.LOOP, automatic, received)
    if len(_PART_HEADER.findall(raw)) > limits.max_mime_parts:
        return Triage(Replies.TOO_MANY_PARTS.format(limit=limits.max_mime_parts), automatic, received)
    return Triage(None, automatic, received)
