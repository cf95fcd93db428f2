"""``mail-gateway queue`` in sqs mode: the table's items and the dead-letter queue, beside running gateways.

``list``, ``show``, ``retry`` and ``delete`` read and change the mails' items (the output is the spool's:
:mod:`gateway.delivery.admin` formats both). SQS messages cannot be listed or changed, so:

- a retried mail gets a new message of a new *generation*: its older messages, wherever they are, are
  stale and deleted by the first gateway that receives them;
- the dead-letter queue is read by receiving its messages and making them visible again at once; it holds
  the mails the gateways gave up (their items say ``dead``) and those the queue's redrive policy moved
  there (a message that made every worker crash ``maxReceiveCount`` times), which ``list`` names and
  ``retry --all-dead`` redrives with the rest, removing their copies from the dead-letter queue;
- a deleted mail's objects and item go; its message, when it shows, finds neither and is dropped.

``move --to sqs`` moves a stopped spool's mail (``[queue] path``) into the shared queue, keeping its id,
state, attempts, contacts made and built requests, and the Message-ID -> ContactId memory.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.aws.answers import Answers
from gateway.aws.clients import AwsClients
from gateway.aws.dynamodb import TTL_ATTRIBUTE, Table
from gateway.aws.objects import MailObjects, sha256_of
from gateway.aws.sqs import Received, WorkQueue
from gateway.delivery.admin import _summary, counts_line, list_lines, show_lines
from gateway.delivery.queue import LOCK_FILE
from gateway.delivery.shared import records
from gateway.delivery.spool import DATABASE, STATES, THREAD_DAYS, MailState, QueuedMail, Spool
from gateway.errors import ConditionFailedError, DeliveryError
from gateway.settings import Settings

__all__ = ["Operator", "run_shared_queue_command"]

LIST_LIMIT = 1000
PEEK_SECONDS = 30  # a dead letter being looked at is hidden this long at most (made visible at once after)
PEEK_MAX = 1000
Out = Callable[[str], None]


@dataclass(frozen=True)
class DeadLetter:
    mail_id: str | None  # None: not a mail of this queue
    message: Received


class Operator:
    """The operator's hands on the shared queue: its table, its objects, its queues."""

    def __init__(self, aws: AwsClients, settings: Settings) -> None:
        queue = settings.queue
        assert queue.queue_url is not None, "sqs mode names its queue"
        assert queue.table is not None, "sqs mode names its table"
        answers = Answers()
        self.prefix = queue.prefix
        self.table = Table(aws.dynamodb, queue.table, answers)
        self.objects = MailObjects(aws.s3, settings.attachments, answers)
        self.work_queue = WorkQueue(aws.sqs, queue.queue_url, answers)
        self.dead_letters: WorkQueue | None = None

    async def open(self) -> Operator:
        self.dead_letters = await self.work_queue.dead_letter_queue()
        return self

    # -- reading --------------------------------------------------------------------------------------

    async def counts(self) -> dict[MailState, int]:
        return {state: await self.table.count_state(state) for state in STATES}

    async def mails(self) -> list[QueuedMail]:
        items = [item for state in STATES for item in await self.table.in_state(state, LIST_LIMIT)]
        items.sort(key=lambda item: float(item["received_at"]))
        return [records.queued_mail(item) for item in items[:LIST_LIMIT]]

    async def mail(self, mail_id: str) -> tuple[QueuedMail, dict[str, Any]] | None:
        """The mail with its built requests (for their ClientToken), and its item."""
        item = await self.table.get(records.mail_key(mail_id))
        if item is None:
            return None
        requests = {}
        for position, target in enumerate(item["targets"]):
            if target.get("request"):
                try:
                    requests[position] = json.loads(await self.objects.get_bytes(target["request"]))
                except DeliveryError:
                    continue  # gone with a delivered mail's objects
        return records.queued_mail(item, None, requests), item

    async def peek_dead_letters(self) -> list[DeadLetter]:
        """What the dead-letter queue holds, each message made visible again once seen."""
        if self.dead_letters is None:
            return []
        seen: dict[str, DeadLetter] = {}
        try:
            while len(seen) < PEEK_MAX:
                batch = await self.dead_letters.receive(10, 1, PEEK_SECONDS)
                fresh = [m for m in batch if m.message_id not in seen]
                if not fresh:
                    break
                for message in fresh:
                    try:
                        mail_id: str | None = records.Envelope.parse(message.body).id
                    except ValueError:
                        mail_id = None
                    seen[message.message_id] = DeadLetter(mail_id, message)
        finally:
            for letter in seen.values():
                try:
                    await self.dead_letters.hide(letter.message.receipt, 0)
                except DeliveryError:
                    continue  # it shows again after PEEK_SECONDS all the same
        return list(seen.values())

    async def moved_by_redrive(self, letters: list[DeadLetter]) -> list[DeadLetter]:
        """The dead letters the gateways did not put there themselves (their item is not dead)."""
        moved = []
        for letter in letters:
            item = await self.table.get(records.mail_key(letter.mail_id)) if letter.mail_id else None
            if item is None or item["state"] != "dead":
                moved.append(letter)
        return moved

    # -- acting ---------------------------------------------------------------------------------------

    async def retry(self, mail_id: str, letters: list[DeadLetter] | None = None) -> bool:
        """Deliver a dead, deferred or parked mail now (or one whose claim died with its gateway, or whose
        message the redrive policy moved): a new message of a new generation; refused targets rebuilt."""
        item = await self.table.get(records.mail_key(mail_id))
        if item is None:
            return False
        letters = await self.peek_dead_letters() if letters is None else letters
        mine = [letter for letter in letters if letter.mail_id == mail_id]
        state = item["state"]
        abandoned = state == "active" and float(item.get("lease_until") or 0) < time.time()
        if not (state in ("dead", "deferred", "parked") or abandoned or (mine and state != "done")):
            return False
        generation = int(item.get("generation", 0)) + 1
        assign: dict[str, Any] = {
            "state": "queued",
            "next_attempt_at": time.time(),
            "generation": generation,
            "failures": 0,
            "owner": "",
        }
        for position, target in enumerate(item["targets"]):
            if target["state"] == "failed":
                for name in ("request", "built_at", "error", "error_service", "error_code", "reply_code"):
                    assign[f"targets[{position}].{name}"] = None
                assign[f"targets[{position}].state"] = "pending"
        try:
            await self.table.update(
                records.mail_key(mail_id),
                assign=assign,
                remove=["notice", "notice_at", "lease_until"],
                condition="#state = :state AND #generation = :generation",
                state=state,
                generation=generation - 1,
            )
        except ConditionFailedError:
            return False  # a gateway changed it meanwhile: look again
        await self.work_queue.send(records.envelope_of(item).redone(generation).body())
        await self._drop_letters(mine)
        return True

    async def retry_dead(self) -> list[str]:
        """Every dead mail, and every mail the redrive policy moved: sent again (a redrive), their copies
        gone from the dead-letter queue; messages of mails that no longer exist are removed."""
        letters = await self.peek_dead_letters()
        ids = {item["id"] for item in await self.table.in_state("dead", PEEK_MAX)}
        ids |= {letter.mail_id for letter in letters if letter.mail_id is not None}
        retried = [mail_id for mail_id in sorted(ids) if await self.retry(mail_id, letters)]
        for letter in letters:
            if letter.mail_id is None or letter.mail_id not in retried:
                item = await self.table.get(records.mail_key(letter.mail_id)) if letter.mail_id else None
                if item is None or item["state"] == "done":
                    await self._drop_letters([letter])
        return retried

    async def delete(self, mail_id: str) -> bool | str:
        """True when deleted, False when there is no such mail, a reason when it may not be deleted now."""
        item = await self.table.get(records.mail_key(mail_id))
        if item is None:
            return False
        if item["state"] == "active" and float(item.get("lease_until") or 0) >= time.time():
            return f"{mail_id} is being delivered right now (by {item.get('owner')}); try again in a moment"
        await self.objects.delete([item["key"], *records.request_keys(self.prefix, item)])
        await self._drop_letters([x for x in await self.peek_dead_letters() if x.mail_id == mail_id])
        await self.table.delete(records.mail_key(mail_id))
        return True

    async def _drop_letters(self, letters: list[DeadLetter]) -> None:
        """Remove dead letters just peeked at (their receipt is the latest while nobody else looked)."""
        if self.dead_letters is None:
            return
        for letter in letters:
            await self.dead_letters.delete(letter.message.receipt)


async def run_shared_queue_command(
    settings: Settings, action: str, mail_id: str | None, all_dead: bool, out: Out, as_json: bool
) -> int:
    """One operator command on the shared queue; the exit status."""
    from gateway.aws.clients import usable_credentials

    credentials, _ = await usable_credentials(settings.aws, shared_queue=True)
    async with AwsClients(settings.aws, credentials, shared_queue=True) as aws:
        operator = await Operator(aws, settings).open()
        if action == "move":
            return await move_spool(settings, operator, out)
        return await _command(operator, action, mail_id, all_dead, out, as_json)


async def _command(
    operator: Operator, action: str, mail_id: str | None, all_dead: bool, out: Out, as_json: bool
) -> int:
    now = time.time()
    if action == "list":
        counts, mails, letters = (
            await operator.counts(),
            await operator.mails(),
            await operator.peek_dead_letters(),
        )
        moved = await operator.moved_by_redrive(letters)
        if as_json:
            document = {
                "counts": counts,
                "mails": [_summary(m) for m in mails],
                "dead_letter_queue": {
                    "messages": len(letters),
                    "moved_by_redrive": [x.mail_id for x in moved],
                },
            }
            out(json.dumps(document, indent=2))
            return 0
        out(counts_line(counts))
        for line in list_lines(mails, now):
            out(line)
        out(f"dead-letter queue: {len(letters)} message(s)")
        for letter in moved:
            name = letter.mail_id or "(not a mail of this gateway)"
            out(f"{name}  moved there by the redrive policy after {letter.message.receive_count} receives")
        return 0
    if action == "retry" and all_dead:
        retried = await operator.retry_dead()
        out(
            f"{len(retried)} mail(s) queued again: " + " ".join(retried)
            if retried
            else "nothing to retry: no mail in the dead-letter area"
        )
        return 0
    if mail_id is None:
        out(f"queue {action}: give a queue id")
        return 2
    if action == "show":
        found = await operator.mail(mail_id)
        if found is None:
            out(f"no mail {mail_id} in the shared queue")
            return 1
        mail, item = found
        if as_json:
            out(json.dumps(_summary(mail), indent=2))
            return 0
        for line in show_lines(mail, now):
            out(line)
        if item["state"] == "active":
            until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(item.get("lease_until") or 0)))
            out(f"held by      {item.get('owner')} until {until}")
        return 0
    if action == "retry":
        if await operator.retry(mail_id):
            out(f"{mail_id} queued again")
            return 0
        out(f"{mail_id}: no dead or deferred mail with that id")
        return 1
    deleted = await operator.delete(mail_id)
    if isinstance(deleted, str):
        out(deleted)
        return 1
    out(f"{mail_id} deleted" if deleted else f"no mail {mail_id} in the shared queue")
    return 0 if deleted else 1


# -- moving a spool into the shared queue -------------------------------------------------------------


async def move_spool(settings: Settings, operator: Operator, out: Out) -> int:
    """Every mail of the stopped spool at ``[queue] path`` that is not done yet, and its memory of threads,
    into the shared queue; each mail leaves the spool only once the shared queue has it. Safe to run
    again after an interruption: a mail already moved is not moved twice."""
    path = settings.queue.path
    if not (path / DATABASE).exists():
        out(f"no spool at {path} (queue.path)")
        return 1
    lock = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            out(f"queue.path: a gateway is running on the spool at {path}: stop it first")
            return 1
        spool = Spool(path, create=False)
        try:
            spool.recover()  # mail its stopped gateway was delivering is simply queued
            moved = 0
            for state in (MailState.QUEUED, MailState.DEFERRED, MailState.DEAD, MailState.PARKED):
                for listed in spool.mails(state, limit=10**9):
                    mail = spool.get(listed.id, with_content=True)
                    if mail is None or mail.content is None:
                        continue
                    await _move_one(operator, mail)
                    spool.delete(mail.id)
                    moved += 1
            threads = await _move_threads(operator, path / DATABASE)
        finally:
            spool.close()
    finally:
        os.close(lock)
    out(f"moved {moved} mail(s) and {threads} remembered thread(s) from {path} into the shared queue")
    return 0


async def _move_one(operator: Operator, mail: QueuedMail) -> None:
    assert mail.content is not None
    key = records.object_key(operator.prefix, mail.id)
    digest = await asyncio.to_thread(sha256_of, mail.content)
    await operator.objects.put_mail(key, mail.content, digest)
    generations: dict[int, int] = {}
    for target in mail.targets:
        if target.request is not None:
            request = records.request_key(operator.prefix, mail.id, target.position, 1)
            await operator.objects.put_once(request, json.dumps(target.request).encode())
            generations[target.position] = 1
    item = records.moved_item(mail, key, digest, operator.prefix, generations)
    try:
        await operator.table.put(records.mail_key(mail.id), item, condition="attribute_not_exists(pk)")
    except ConditionFailedError:
        return  # moved by an earlier run that stopped before it could leave the spool
    body = records.envelope_of(item).body()
    if mail.state in (MailState.QUEUED, MailState.DEFERRED):
        await operator.work_queue.send(body)
    elif mail.state == MailState.DEAD and operator.dead_letters is not None:
        await operator.dead_letters.send(body)


async def _move_threads(operator: Operator, database: Any) -> int:
    """The spool's Message-ID -> ContactId rows of the last 90 days, with their age."""
    oldest = time.time() - THREAD_DAYS * 86400
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT instance_id, message_id, contact_id, created_at FROM thread WHERE created_at >= ?",
            (oldest,),
        ).fetchall()
    for instance_id, message_id, contact_id, created_at in rows:
        await operator.table.put(
            records.thread_key(instance_id, message_id),
            {
                "contact_id": contact_id,
                "created_at": float(created_at),
                TTL_ATTRIBUTE: int(float(created_at) + THREAD_DAYS * 86400),
            },
        )
    return len(rows)
