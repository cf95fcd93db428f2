"""Mail that a machine wrote: auto-replies, bounces, list mail, and the gateway's own notifications.

Automatic mail is told apart by the signs help desks use (RFC 3834 ``Auto-Submitted``, ``Precedence``,
``X-Autoreply``, ``X-Auto-Response-Suppress``, the null sender, ``multipart/report``, MAILER-DAEMON
senders...) and marked on the contact with the attribute :data:`AUTOMATIC_ATTRIBUTE`, so that a flow can
skip its auto-acknowledgement. :data:`LOOP_HEADER` is on everything the gateway itself sends: mail that
carries it with the gateway's own name has looped. Pure functions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import StrEnum

__all__ = ["AUTOMATIC_ATTRIBUTE", "AUTOMATIC_VALUES", "LOOP_HEADER", "Automatic", "classify"]

LOOP_HEADER = "X-Connect-Gateway-Loop"  # on everything the gateway itself sends; mail carrying it is a loop
AUTOMATIC_ATTRIBUTE = "gateway_automatic"


class Automatic(StrEnum):
    """What kind of machine wrote the mail, if any: the attribute's value (absent for ``NO``)."""

    NO = "no"  # a person wrote it
    AUTO_REPLY = "auto-reply"
    BOUNCE = "bounce"
    LIST = "list"
    AUTO_GENERATED = "auto-generated"


AUTOMATIC_VALUES = tuple(kind.value for kind in Automatic if kind is not Automatic.NO)

_BOUNCE_SENDERS = ("mailer-daemon", "postmaster")
_SUPPRESS = {"all", "oof", "autoreply", "dr", "ndr", "rn", "nrn"}


def _local_part(address: str) -> str:
    return address.strip().strip("<>").rsplit("@", 1)[0].rsplit("<", 1)[-1].strip().lower()


def classify(headers: Iterable[tuple[str, str]], sender: str | None) -> Automatic:
    """What kind of mail this is, from the header and the envelope sender (``""`` is the null sender; None
    when the envelope is not known)."""
    fields: dict[str, str] = {}
    for name, value in headers:
        fields.setdefault(name.lower(), " ".join(value.split()).lower())
    senders = {_local_part(fields.get("from", "")), _local_part(sender or "")}
    content_type = fields.get("content-type", "")
    if sender == "" or senders & set(_BOUNCE_SENDERS) or "x-failed-recipients" in fields:
        return Automatic.BOUNCE
    if content_type.startswith("multipart/report") and "delivery-status" in content_type:
        return Automatic.BOUNCE
    auto_submitted = fields.get("auto-submitted", "no").split(";")[0].strip()
    precedence = fields.get("precedence", "")
    if (
        auto_submitted == "auto-replied"
        or "x-autoreply" in fields
        or "x-autorespond" in fields
        or precedence == "auto_reply"
        or "x-loop" in fields
    ):
        return Automatic.AUTO_REPLY
    if "list-id" in fields or "list-unsubscribe" in fields or precedence == "list":
        return Automatic.LIST
    suppress = {token.strip() for token in re.split(r"[,\s]+", fields.get("x-auto-response-suppress", ""))}
    if auto_submitted != "no" or precedence in ("bulk", "junk") or suppress & _SUPPRESS:
        return Automatic.AUTO_GENERATED
    if content_type.startswith("multipart/report"):  # read receipts, feedback reports
        return Automatic.AUTO_GENERATED
    return Automatic.NO
