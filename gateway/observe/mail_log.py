"""Logs: one structured line per mail, JSON by default (text for terminals), personal data left out.

Each mail ends in exactly one line of the ``gateway.mail`` logger, at its final outcome (delivered, dead,
parked, refused after DATA) or, in sync mode, at the reply: queue id, Message-ID, number of recipients,
ContactIds, outcome and duration. Subjects and addresses are personal data and appear only when the
operator sets ``[log] personal_data = true``.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gateway.message.mime import received_message_id

if TYPE_CHECKING:
    from gateway.mail import ReceivedMail

__all__ = ["JsonFormatter", "TextFormatter", "configure_logging", "log_mail", "log_received", "loggable"]

MAIL_LOGGER = logging.getLogger("gateway.mail")
_personal_data = False  # set once at start by configure_logging, from [log] personal_data


def log_mail(
    *,
    outcome: str,
    queue_id: str | None,
    message_id: str | None,
    recipients: int,
    contacts: Sequence[str] = (),
    duration: float | None = None,
    reason: str | None = None,
    personal: dict[str, Any] | None = None,
) -> None:
    """The one line for a mail. ``personal`` (sender, recipients, subject) is kept only if allowed."""
    fields: dict[str, Any] = {
        "outcome": outcome,
        "queue_id": queue_id,
        "message_id": message_id,
        "recipients": recipients,
        "contacts": list(contacts),
    }
    if duration is not None:
        fields["duration_ms"] = round(duration * 1000, 1)
    if reason:
        fields["reason"] = reason
    if personal and _personal_data:
        fields.update(personal)
    MAIL_LOGGER.info("mail %s", outcome, extra={"mail": fields})


def log_received(
    mail: ReceivedMail,
    outcome: str,
    reason: str | None = None,
    contacts: Sequence[str] = (),
    duration: float | None = None,
) -> None:
    """The line of a mail whose fate is known at the SMTP reply (no queue id): refused, parked, deferred,
    or delivered in sync mode."""
    log_mail(
        outcome=outcome,
        queue_id=None,
        message_id=_message_id(mail),
        recipients=len(mail.recipients),
        contacts=contacts,
        duration=duration,
        reason=reason,
        personal={"sender": mail.sender, "to": list(mail.recipients), "client": mail.peer},
    )


def _message_id(mail: ReceivedMail) -> str | None:
    try:
        return received_message_id(mail)
    except OSError:  # the mail's file is gone (a spool that could not keep it): the line goes without it
        return None


def loggable(whole: str, summary: str) -> str:
    """What the log may say of an error: its ``summary`` (``connect: InvalidRequestException``, from the
    error's fields) unless personal data is allowed, because AWS messages echo request values such as the
    customer's address. The whole text stays in the spool (``mail-gateway queue show``)."""
    return whole if _personal_data else summary


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and a mail's fields when it has them."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        document.update(getattr(record, "mail", {}))
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "mail", None)
        if fields:
            line += " " + " ".join(f"{key}={value}" for key, value in fields.items() if key != "outcome")
        return line


def configure_logging(level: str, style: str, personal_data: bool = False) -> None:
    """The root logger on stderr in ``json`` or ``text``; aiosmtpd's per-command lines (addresses) quiet."""
    global _personal_data
    _personal_data = personal_data
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if style == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("mail.log").setLevel(max(logging.WARNING, root.level))
