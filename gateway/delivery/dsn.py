"""Telling the sender when an accepted mail cannot be delivered (RFC 5321 §6.1, RFC 3464).

Once the gateway has answered 250 it owns the mail; if the mail ends in the dead-letter area, the sender
gets a delivery status notification through the configured smarthost, sent with the null reverse-path
(so that it can never bounce back) and never to a null sender. :func:`build_notification` is pure.
"""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import format_datetime, make_msgid

from gateway.message.automatic import LOOP_HEADER

__all__ = ["Failure", "build_notification", "send_notification"]

SEND_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class Failure:
    recipient: str
    status: str  # enhanced status code, e.g. 5.6.0
    diagnostic: str  # the SMTP reply text that explains it, fit for the sender's eyes


def _original_headers(raw: bytes) -> str:
    end = raw.find(b"\r\n\r\n")
    head = raw if end < 0 else raw[: end + 2]
    return head[:65536].decode("utf-8", "replace")


def build_notification(
    *,
    hostname: str,
    sender: str,
    queue_id: str,
    arrival: datetime,
    raw: bytes,
    failures: Sequence[Failure],
    now: datetime | None = None,
) -> bytes:
    now = now or datetime.now(UTC)
    human = (
        f"This is the mail gateway at {hostname}.\n\n"
        "Your message could not be delivered to the following recipient(s); it was accepted on "
        f"{format_datetime(arrival)} with queue id {queue_id}.\n\n"
        + "".join(f"<{f.recipient}>: {f.diagnostic}\n" for f in failures)
        + "\nThe headers of your message are attached.\n"
    )
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = f"Mail Delivery System <MAILER-DAEMON@{hostname}>"
    report["To"] = sender
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report["Date"] = format_datetime(now)
    report["Message-ID"] = make_msgid(domain=hostname)
    report["Auto-Submitted"] = "auto-replied"
    report[LOOP_HEADER] = hostname
    report.attach(MIMEText(human, "plain", "utf-8"))

    per_message = Message()
    per_message["Reporting-MTA"] = f"dns; {hostname}"
    per_message["X-Queue-ID"] = queue_id
    per_message["Arrival-Date"] = format_datetime(arrival)
    blocks: list[Message | str] = [per_message]
    for failure in failures:
        block = Message()
        block["Final-Recipient"] = f"rfc822; {failure.recipient}"
        block["Action"] = "failed"
        block["Status"] = failure.status
        block["Diagnostic-Code"] = f"smtp; {failure.diagnostic}"
        blocks.append(block)
    status = Message()
    status["Content-Type"] = "message/delivery-status"
    status.set_payload(blocks)
    report.attach(status)

    headers = MIMEText(_original_headers(raw), "rfc822-headers", "utf-8")
    report.attach(headers)
    return report.as_bytes(policy=compat32.clone(linesep="\r\n"))


async def send_notification(smarthost: tuple[str, int], recipient: str, message: bytes) -> None:
    """Hand the notification to the smarthost with ``MAIL FROM:<>``; raises OSError/SMTPException."""

    def send() -> None:
        host, port = smarthost
        with smtplib.SMTP(host, port, timeout=SEND_TIMEOUT_SECONDS) as client:
            client.sendmail("", [recipient], message)

    await asyncio.to_thread(send)
