"""``mail-gateway queue``: the operator's view of the spool, safe beside a running gateway.

``list`` (counts by state, then one line per mail), ``show ID``, ``retry ID``, ``retry --all-dead`` and
``delete ID``. The commands open the spool with their own connection; the running gateway notices retried
mail within a second.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime

from gateway.delivery.spool import STATES, MailState, QueuedMail, Spool, SpoolBusyError, TargetState

__all__ = ["run_queue_command"]


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _age(timestamp: float, now: float) -> str:
    seconds = max(0.0, now - timestamp)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def counts_line(counts: dict[MailState, int]) -> str:
    return "  ".join(f"{state} {counts[state]}" for state in STATES)


def progress(mail: QueuedMail) -> str:
    """Delivered mail by its contacts (a count of failed tries would read as "never tried"); the rest by
    how many tries failed so far."""
    if mail.state == "done":
        made = sum(1 for target in mail.targets if target.state == TargetState.DELIVERED)
        return f"{made} contact{'' if made == 1 else 's'}"
    return f"tries {mail.attempts}"


def list_lines(mails: list[QueuedMail], now: float) -> list[str]:
    lines = []
    for mail in mails:
        error = f"  ({mail.last_error[:100]})" if mail.last_error and mail.state != "done" else ""
        lines.append(
            f"{mail.id}  {mail.state:<8}  {_age(mail.received_at, now):>4}  {progress(mail):<10}  "
            f"{mail.size:>9} B  <{mail.sender}> -> {', '.join(mail.recipients)}{error}"
        )
    return lines


def show_lines(mail: QueuedMail, now: float) -> list[str]:
    lines = [
        f"queue id     {mail.id}",
        f"state        {mail.state}",
        f"received     {_when(mail.received_at)} ({_age(mail.received_at, now)} ago)",
        f"sender       <{mail.sender}>",
        f"recipients   {', '.join(mail.recipients)}",
        f"message-id   {mail.message_id or '-'}",
        f"size         {mail.size} bytes",
        f"attempts     {mail.attempts}",
    ]
    if mail.state in ("queued", "deferred"):
        lines.append(f"next try     {_when(mail.next_attempt_at)}")
    if mail.last_error:
        lines.append(f"last error   {mail.last_error}")
    if mail.notice:
        lines.append(f"notification {mail.notice}")
    for target in mail.targets:
        route = target.target.route
        lines.append(
            f"contact #{target.position}   {target.state}: instance {route.instance_id}, "
            f"destination {target.target.destination}"
            + (f", ContactId {target.contact_id}" if target.contact_id else "")
            + (f", error: {target.error}" if target.error else "")
        )
        if target.request is not None:
            lines.append(
                f"  request built {_when(target.built_at or 0)}, ClientToken {target.request['ClientToken']}"
            )
    return lines


def run_queue_command(
    spool: Spool, action: str, mail_id: str | None, all_dead: bool, out: Callable[[str], None], as_json: bool
) -> int:
    """Carry out one operator command; returns the exit status."""
    now = time.time()
    if action == "list":
        mails = spool.mails()
        if as_json:
            out(json.dumps({"counts": spool.counts(), "mails": [_summary(m) for m in mails]}, indent=2))
        else:
            out(counts_line(spool.counts()))
            for line in list_lines(mails, now):
                out(line)
        return 0
    if action == "retry" and all_dead:
        retried = spool.retry_dead()
        if not retried:
            out("nothing to retry: no mail in the dead-letter area")
        else:
            out(f"{len(retried)} mail(s) queued again: " + " ".join(retried))
        return 0
    if mail_id is None:
        out(f"queue {action}: give a queue id")
        return 2
    if action == "show":
        mail = spool.get(mail_id)
        if mail is None:
            out(f"no mail {mail_id} in the spool")
            return 1
        if as_json:
            out(json.dumps(_summary(mail), indent=2))
        else:
            for line in show_lines(mail, now):
                out(line)
        return 0
    if action == "retry":
        if spool.retry(mail_id):
            out(f"{mail_id} queued again")
            return 0
        out(f"{mail_id}: no dead or deferred mail with that id")
        return 1
    try:
        deleted = spool.delete(mail_id)
    except SpoolBusyError as error:
        out(str(error))
        return 1
    out(f"{mail_id} deleted" if deleted else f"no mail {mail_id} in the spool")
    return 0 if deleted else 1


def _summary(mail: QueuedMail) -> dict[str, object]:
    return {
        "id": mail.id,
        "state": mail.state,
        "received_at": _when(mail.received_at),
        "sender": mail.sender,
        "recipients": list(mail.recipients),
        "message_id": mail.message_id,
        "size": mail.size,
        "attempts": mail.attempts,
        "last_error": mail.last_error,
        "notice": mail.notice,
        "contacts": [
            {
                "destination": t.target.destination,
                "instance_id": t.target.route.instance_id,
                "state": t.state,
                "contact_id": t.contact_id,
                "error": t.error,
            }
            for t in mail.targets
        ],
    }
