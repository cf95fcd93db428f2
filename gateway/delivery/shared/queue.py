"""The shared queue as a :class:`~gateway.delivery.queue.MailQueue`: S3 for the bytes, SQS for the work,
DynamoDB for the state.

Accepting a mail (:meth:`SharedQueue.put`): its bytes go to S3 (with their SHA-256 and the bucket's
encryption), then its message to SQS; only then is it answered 250, and a failure of either is a 451 4.3.0
(a :class:`~gateway.errors.SpoolError`, as a spool that cannot write). Its item is written last: a gateway
that dies before is replaced by the first worker to receive the message, which rebuilds the item from
it. A parked mail is stored with its item and no message.

Delivering (:meth:`claim`): a received message names a mail; its item is claimed by a conditional write
(state and owner as read), so that a message SQS delivers twice is delivered once; the claim lasts the
queue's visibility timeout and is renewed with it. A deferred mail's message stays invisible until the
mail is due (SQS allows 12 hours; a later mail is put back each time it shows early). Every transition
of a claimed mail is conditioned on its owner: a worker that lost its claim (it stalled past the
visibility timeout) changes nothing. Built requests are written once to S3 (``If-None-Match``) beside the
mail, so that a retry resends them unchanged. Delivered, the mail's objects go at once and its item stays
a day (``expires_at``, the table's TTL); dead, its message goes to the dead-letter queue and its item and
objects stay for ``mail-gateway queue``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from gateway.aws.answers import NOT_FOUND, Answers
from gateway.aws.dynamodb import TTL_ATTRIBUTE, IfNotExists, Table
from gateway.aws.objects import MailObjects, sha256_of
from gateway.aws.sqs import WorkQueue
from gateway.delivery.incoming import SMALL_MAIL_BYTES
from gateway.delivery.shared import records
from gateway.delivery.shared.receiver import Receiver
from gateway.delivery.spool import DONE_RETENTION_SECONDS, THREAD_DAYS, MailState, Notice, QueuedMail, new_id
from gateway.errors import ConditionFailedError, DeliveryError, SpoolError
from gateway.mail import FileContent, MailContent, ReceivedMail
from gateway.message.mime import received_message_id
from gateway.observe.metrics import Metrics
from gateway.replies import Reply
from gateway.settings import AttachmentSettings, QueueSettings

if TYPE_CHECKING:
    from types_aiobotocore_connect.type_defs import StartEmailContactRequestTypeDef

    from gateway.aws.clients import AwsClients

__all__ = ["SharedQueue"]

log = logging.getLogger(__name__)

CLAIM_WAIT_SECONDS = 1.0  # a worker waits this long for a message, then looks at its own state
EARLY_SECONDS = 1.0  # a deferred mail that shows this much before it is due is put back
NOTICE_STALE_SECONDS = 600.0  # a notification claimed by a gateway that did not finish it: retried
HEALTH_SECONDS = 60.0  # /readyz: each service must have answered within this
HEARTBEAT_SECONDS = 20.0  # an idle gateway asks each service this often, so that readiness stays true
HEARTBEAT_KEY = "{prefix}mail-gateway-heartbeat"  # never written: asking for it proves S3 answers
INCOMING = "incoming"
DOWNLOADS = "mail"


@dataclass
class _Claim:
    """A mail this gateway's worker holds: the message's receipt, the bytes, the item as claimed."""

    receipt: str
    body: str
    item: dict[str, Any]
    content: MailContent | None = None
    generations: dict[int, int] = field(default_factory=dict)
    concluding: bool = False  # its worker is recording the outcome: renewals stop

    def drop(self) -> None:
        if isinstance(self.content, FileContent):
            self.content.path.unlink(missing_ok=True)
        self.content = None


class SharedQueue:
    def __init__(
        self,
        aws: AwsClients,
        queue: QueueSettings,
        attachments: AttachmentSettings,
        work: Path,
        metrics: Metrics | None = None,
    ) -> None:
        """``work``: a directory of this machine for mails while they arrive and large mails delivered."""
        assert queue.queue_url is not None, "sqs mode names its queue"
        assert queue.table is not None, "sqs mode names its table"
        self.answers = Answers(metrics)
        self.work_queue = WorkQueue(aws.sqs, queue.queue_url, self.answers)
        self.table = Table(aws.dynamodb, queue.table, self.answers)
        self.objects = MailObjects(aws.s3, attachments, self.answers)
        self.dead_letters: WorkQueue | None = None
        self.prefix = queue.prefix
        self.visibility = 0  # the queue's visibility timeout, read at open: the claim's lease
        self._work = work
        # Who holds a claim, for the operator (``queue show``): this machine and process, and a nonce.
        self.owner = f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(4)}"
        self._claims: dict[str, _Claim] = {}
        self._receiver: Receiver | None = None
        self._heartbeat: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Learn the queue's visibility timeout and dead-letter queue, and that the table and the bucket
        answer (so that the gateway is ready as it starts listening)."""
        for directory in (self._work / INCOMING, self._work / DOWNLOADS):
            directory.mkdir(parents=True, exist_ok=True)
        attributes = await self.work_queue.attributes()
        self.visibility = max(1, int(attributes.get("VisibilityTimeout", "30")))
        self.dead_letters = await self.work_queue.dead_letter_queue(attributes)
        if self.dead_letters is None:
            log.warning("the queue has no redrive policy: dead mail stays in the table only")
        await self.table.describe()
        await self.objects.exists(HEARTBEAT_KEY.format(prefix=self.prefix))
        self._receiver = Receiver(self.work_queue, self.visibility)
        self._heartbeat = asyncio.get_running_loop().create_task(self._beat(), name="shared-queue-heartbeat")

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        if self._receiver is not None:
            await self._receiver.close()
        for mail_id in list(self._claims):
            self._forget(mail_id)

    @property
    def incoming(self) -> Path:
        return self._work / INCOMING

    def free_bytes(self) -> int:
        return shutil.disk_usage(self._work).free

    # -- accepting ------------------------------------------------------------------------------------

    async def _store(self, mail: ReceivedMail) -> records.Envelope:
        """The bytes in S3; the envelope that names them."""
        now = time.time()
        mail_id = new_id(now)
        content = mail.content
        digest = (
            sha256_of(content)
            if content.size <= SMALL_MAIL_BYTES
            else await asyncio.to_thread(sha256_of, content)
        )
        key = records.object_key(self.prefix, mail_id)
        envelope = records.Envelope.of(mail_id, mail, now, received_message_id(mail), key, digest)
        await self.objects.put_mail(key, content, digest)
        return envelope

    async def put(self, mail: ReceivedMail) -> str:
        """In S3 and in SQS when it returns (the 250 may go); :class:`SpoolError` (451 4.3.0) if not."""
        try:
            envelope = await self._store(mail)
        except DeliveryError as error:
            raise SpoolError(f"the shared queue could not store the mail: {error}") from error
        try:
            await self.work_queue.send(envelope.body())
        except DeliveryError as error:
            with contextlib.suppress(DeliveryError):
                await self.objects.delete([envelope.key])  # the sender sends it again
            raise SpoolError(f"the shared queue could not take the mail: {error}") from error
        try:
            await self._create(envelope, MailState.QUEUED)
        except DeliveryError as error:  # the mail is safe in S3 and SQS: its first worker writes the item
            log.warning(
                "%s: its item could not be written (%s); the first worker will", envelope.id, error.summary
            )
        return envelope.id

    async def _create(self, envelope: records.Envelope, state: MailState) -> dict[str, Any]:
        """The item, unless one exists (a worker was faster); the item as it is."""
        item = records.new_item(envelope, state, time.time())
        try:
            await self.table.put(records.mail_key(envelope.id), item, condition="attribute_not_exists(pk)")
        except ConditionFailedError:
            return await self.table.get(records.mail_key(envelope.id)) or item
        return item

    async def park(self, mail: ReceivedMail) -> str:
        """Kept with its item and no message: ``queue retry`` sends it on after all."""
        try:
            envelope = await self._store(mail)
            await self._create(envelope, MailState.PARKED)
        except DeliveryError as error:
            raise SpoolError(f"the shared queue could not keep the mail: {error}") from error
        return envelope.id

    # -- delivering -----------------------------------------------------------------------------------

    async def claim(self) -> QueuedMail | None:
        assert self._receiver is not None, "the queue is not open"
        received = await self._receiver.next(within=CLAIM_WAIT_SECONDS)
        if received is None:
            return None
        return await self._take(received.receipt, received.body)

    async def _take(self, receipt: str, body: str) -> QueuedMail | None:
        """The mail a message names, claimed; None when there is nothing to do (now)."""
        try:
            envelope = records.Envelope.parse(body)
        except ValueError:
            await self._discard(receipt, body)
            return None
        key = records.mail_key(envelope.id)
        item = await self.table.get(key)
        if item is None:
            if not await self.objects.exists(envelope.key):  # deleted by an operator, or long done
                await self.work_queue.delete(receipt)
                return None
            item = await self._create(envelope, MailState.QUEUED)
        now = time.time()
        state = MailState(item["state"])
        if envelope.generation < int(item.get("generation", 0)) or state in (
            MailState.DONE,
            MailState.DEAD,
            MailState.PARKED,
        ):
            if state == MailState.DONE:  # a gateway died between recording it and cleaning up
                await self.objects.delete([item["key"], *records.request_keys(self.prefix, item)])
            await self.work_queue.delete(receipt)
            return None
        if state == MailState.DEFERRED and float(item["next_attempt_at"]) > now + EARLY_SECONDS:
            await self.work_queue.hide(receipt, float(item["next_attempt_at"]) - now)
            return None
        lease = float(item.get("lease_until") or 0)
        if state == MailState.ACTIVE and lease > now:  # another worker delivers it: look again after
            await self.work_queue.hide(receipt, lease - now + EARLY_SECONDS)
            return None
        try:
            item = await self.table.update(
                key,
                assign={
                    "state": str(MailState.ACTIVE),
                    "lease_until": now + self.visibility,
                    "owner": self.owner,
                },
                condition="#state = :state AND #owner = :owner AND #generation = :generation",
                state=item["state"],
                owner=item.get("owner", ""),
                generation=int(item.get("generation", 0)),
            )
        except ConditionFailedError:
            return None  # someone changed it meanwhile: the message shows again and is looked at anew
        claim = _Claim(receipt, body, item)
        self._claims[envelope.id] = claim
        try:
            claim.content = await self.objects.get_mail(
                item["key"], item.get("sha256"), self._work / DOWNLOADS, SMALL_MAIL_BYTES
            )
            requests = await self._requests(item)
        except DeliveryError as error:
            if error.code not in NOT_FOUND:
                self._forget(envelope.id)
                raise
            await self.bury(envelope.id, "its stored bytes or requests are gone from the bucket")
            self._forget(envelope.id)
            return None
        for position, target in enumerate(item["targets"]):
            claim.generations[position] = int(target.get("generation", 0))
        return records.queued_mail(item, claim.content, requests)

    async def _requests(self, item: dict[str, Any]) -> dict[int, StartEmailContactRequestTypeDef]:
        found = {}
        for position, target in enumerate(item["targets"]):
            if target.get("request") and target["state"] == "pending":
                found[position] = cast(
                    "StartEmailContactRequestTypeDef",
                    json.loads(await self.objects.get_bytes(target["request"])),
                )
        return found

    async def _discard(self, receipt: str, body: str) -> None:
        """Not a mail of this queue: a probe of ``check`` goes; anything else to the dead-letter queue."""
        if not records.is_probe(body):
            log.error("a message in the queue is not a mail of this gateway: moved to the dead-letter queue")
            if self.dead_letters is not None:
                await self.dead_letters.send(body)
        await self.work_queue.delete(receipt)

    async def get(self, mail_id: str) -> QueuedMail | None:
        """The mail with its bytes (the claim's, or read from S3 into memory): what a notification quotes."""
        item = await self.table.get(records.mail_key(mail_id))
        if item is None:
            return None
        claim = self._claims.get(mail_id)
        content = claim.content if claim is not None else None
        if content is None and item.get("key"):
            try:
                content = await self.objects.get_mail(
                    item["key"], item.get("sha256"), self._work / DOWNLOADS, int(item["size"]) + 1
                )
            except DeliveryError as error:
                if error.code not in NOT_FOUND:
                    raise
        return records.queued_mail(item, content)

    async def next_due(self) -> float | None:
        """Always now: :meth:`claim` itself waits for SQS."""
        return time.time()

    async def save_request(
        self, mail_id: str, position: int, request: StartEmailContactRequestTypeDef, built_at: float
    ) -> None:
        """Written once under a new generation; a second writer of the same generation keeps the first."""
        claim = self._claims[mail_id]
        generation = claim.generations.get(position, 0) + 1
        key = records.request_key(self.prefix, mail_id, position, generation)
        if not await self.objects.put_once(key, json.dumps(request).encode()):
            log.warning(
                "%s: request %d.%d was written by another worker first", mail_id, position, generation
            )
        await self.table.update(
            records.mail_key(mail_id),
            assign={
                f"targets[{position}].request": key,
                f"targets[{position}].built_at": built_at,
                f"targets[{position}].generation": generation,
            },
        )
        claim.generations[position] = generation

    async def delivered(
        self, mail_id: str, position: int, contact_id: str | None, thread_ids: Sequence[str]
    ) -> None:
        """A target became a contact (a ContactId already recorded stays); its Message-ID is remembered for
        90 days (``expires_at``; reads check it too, as TTL deletes late or, in moto, never)."""
        assign: dict[str, Any] = {
            f"targets[{position}].state": "delivered",
            f"targets[{position}].error": None,
            f"targets[{position}].error_service": None,
            f"targets[{position}].error_code": None,
        }
        if contact_id is not None:
            assign[f"targets[{position}].contact_id"] = IfNotExists(contact_id)
        item = await self.table.update(records.mail_key(mail_id), assign=assign)
        if contact_id is None:
            return
        route = json.loads(item["targets"][position]["route"])
        now = time.time()
        for message_id in thread_ids:
            await self.table.put(
                records.thread_key(route["instance_id"], message_id),
                {"contact_id": contact_id, "created_at": now, TTL_ATTRIBUTE: int(now + THREAD_DAYS * 86400)},
            )

    async def failed(
        self, mail_id: str, position: int, error: DeliveryError, reply: Reply | None = None
    ) -> None:
        reply = reply or error.reply
        await self.table.update(
            records.mail_key(mail_id),
            assign={
                f"targets[{position}].state": "failed",
                f"targets[{position}].error": str(error),
                f"targets[{position}].error_service": error.service,
                f"targets[{position}].error_code": error.code,
                f"targets[{position}].reply_code": reply.code,
                f"targets[{position}].reply_status": reply.status,
                f"targets[{position}].reply_text": reply.text,
            },
        )

    async def _transition(self, mail_id: str, *, forget: bool = True, **update: Any) -> bool:
        """A claimed mail's state changed, if the claim is still this worker's; whether it was."""
        claim = self._claims.get(mail_id)
        if claim is not None and forget:
            claim.concluding = True
        try:
            await self.table.update(
                records.mail_key(mail_id), condition="#owner = :owner", owner=self.owner, **update
            )
        except ConditionFailedError:
            if forget or claim is None or not claim.concluding:  # not a renewal overtaken by the outcome
                log.warning("%s: another worker took it over (this one stalled past its lease)", mail_id)
            if forget:
                self._forget(mail_id)
            return False
        return True

    async def defer(self, mail_id: str, until: float, error: str, *, attempt: bool) -> None:
        """Deferred in the item; the message invisible until then (SQS's 12 hours at most)."""
        changed = await self._transition(
            mail_id,
            assign={"state": "deferred", "next_attempt_at": until, "last_error": error, "owner": ""},
            add={"attempts": 1 if attempt else 0},
            remove=["lease_until"],
        )
        claim = self._forget(mail_id)
        if changed and claim is not None:
            await self._quietly(self.work_queue.hide(claim.receipt, until - time.time()))

    async def release(self, mail_id: str) -> None:
        """Shutdown cut its delivery short: queued, and its message visible again at once."""
        changed = await self._transition(
            mail_id, assign={"state": "queued", "owner": ""}, remove=["lease_until"]
        )
        claim = self._forget(mail_id)
        if changed and claim is not None:
            await self._quietly(self.work_queue.hide(claim.receipt, 0))

    async def bury(self, mail_id: str, reason: str) -> None:
        """Dead in the item; the message moved to the dead-letter queue. The bytes stay (``queue retry``)."""
        changed = await self._transition(
            mail_id,
            assign={"state": "dead", "last_error": reason, "owner": ""},
            add={"attempts": 1},
            remove=["lease_until"],
        )
        claim = self._claims.get(mail_id)  # kept until the notification is settled: it quotes the bytes
        if not changed or claim is None:
            return
        if self.dead_letters is not None:
            await self._quietly(self.dead_letters.send(claim.body))
        await self._quietly(self.work_queue.delete(claim.receipt))

    async def finish(self, mail_id: str) -> None:
        """Delivered: the bytes and requests go now (personal data kept no longer than needed); the item
        stays a day, then the table's TTL removes it."""
        now = time.time()
        changed = await self._transition(
            mail_id,
            assign={
                "state": "done",
                "owner": "",
                "last_error": None,
                TTL_ATTRIBUTE: int(now + DONE_RETENTION_SECONDS),
            },
            remove=["lease_until"],
        )
        claim = self._forget(mail_id)
        if not changed or claim is None:
            return
        requests = records.request_keys(self.prefix, claim.item, claim.generations)
        await self._quietly(self.objects.delete([claim.item["key"], *requests]))
        await self._quietly(self.work_queue.delete(claim.receipt))

    async def set_notice(self, mail_id: str, notice: Notice) -> None:
        await self.table.update(
            records.mail_key(mail_id), assign={"notice": str(notice)}, remove=["notice_at"]
        )
        self._forget(mail_id)

    async def awaiting_notice(self) -> list[str]:
        """Dead mails whose notification failed, each taken by one gateway (another retries it only if
        this one did not finish within :data:`NOTICE_STALE_SECONDS`)."""
        now = time.time()
        taken = []
        for item in await self.table.in_state("dead", 1000):
            if item.get("notice") != Notice.FAILED:
                continue
            try:
                await self.table.update(
                    records.mail_key(item["id"]),
                    assign={"notice_at": now},
                    condition="#notice = :failed AND"
                    " (attribute_not_exists(#notice_at) OR #notice_at < :stale)",
                    failed=str(Notice.FAILED),
                    stale=now - NOTICE_STALE_SECONDS,
                )
            except ConditionFailedError:
                continue
            taken.append(item["id"])
        return taken

    async def related_contact(self, instance_id: str, message_ids: Sequence[str]) -> str | None:
        """The contact of the first known message among ``message_ids`` (newest first), within 90 days."""
        if not message_ids:
            return None
        keys = [records.thread_key(instance_id, message_id) for message_id in message_ids]
        found = await self.table.get_many(keys)
        now = time.time()
        for key in keys:
            item = found.get(key)
            if item is not None and float(item.get(TTL_ATTRIBUTE, 0)) > now:
                return str(item["contact_id"])
        return None

    async def purge(self) -> None:
        """Nothing to do by hand: the table's TTL and the bucket's lifecycle rule forget what is old."""

    async def renew(self, mail_id: str) -> None:
        """Still delivering: the message stays invisible, the claim alive, for another visibility timeout."""
        claim = self._claims.get(mail_id)
        if claim is None or claim.concluding:
            return
        await self.work_queue.hide(claim.receipt, self.visibility)
        # A lost claim keeps its bytes: the delivery under way still reads them, and ends harmlessly
        # (Connect's ClientToken), its transitions changing nothing.
        await self._transition(mail_id, forget=False, assign={"lease_until": time.time() + self.visibility})

    async def count_failure(self, mail_id: str) -> int:
        item = await self.table.update(records.mail_key(mail_id), add={"failures": 1})
        return int(item.get("failures", 0))

    # -- health and figures ---------------------------------------------------------------------------

    def health(self) -> tuple[bool, str]:
        """S3, SQS and DynamoDB each answered within :data:`HEALTH_SECONDS`, and none is failing now."""
        for service, name in (("s3", "S3"), ("sqs", "SQS"), ("dynamodb", "DynamoDB")):
            failing = self.answers.failing(service)
            if failing is not None:
                return False, f"{name} is not answering: {failing.summary}"
            if self.answers.silent(service, HEALTH_SECONDS):
                return False, f"{name} has not answered for {HEALTH_SECONDS:.0f} seconds"
        return True, "ok"

    async def _beat(self) -> None:
        """Ask a service that nothing else asked lately, so that an idle gateway stays ready, and one that
        lost a service notices."""
        while True:
            if self.answers.silent("s3", HEARTBEAT_SECONDS):
                await self._quietly(self.objects.exists(HEARTBEAT_KEY.format(prefix=self.prefix)))
            if self.answers.silent("sqs", HEARTBEAT_SECONDS):
                await self._quietly(self.work_queue.attributes())
            if self.answers.silent("dynamodb", HEARTBEAT_SECONDS):
                await self._quietly(self.table.get("heartbeat"))
            await asyncio.sleep(HEARTBEAT_SECONDS / 2)

    async def counts(self) -> dict[str, int]:
        """The queue's depth as SQS counts it (approximately): queued (visible), active (in flight or
        deferred), dead (in the dead-letter queue)."""
        attributes = await self.work_queue.attributes()
        counts = {
            "queued": int(attributes.get("ApproximateNumberOfMessages", 0)),
            "active": int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
        }
        if self.dead_letters is not None:
            dead = await self.dead_letters.attributes()
            counts["dead"] = int(dead.get("ApproximateNumberOfMessages", 0)) + int(
                dead.get("ApproximateNumberOfMessagesNotVisible", 0)
            )
        return counts

    # -- helpers --------------------------------------------------------------------------------------

    def _forget(self, mail_id: str) -> _Claim | None:
        claim = self._claims.pop(mail_id, None)
        if claim is not None:
            claim.drop()
        return claim

    async def _quietly(self, call: Any) -> None:
        """A step whose failure only delays (the message shows again; the lifecycle rule removes what is
        left): logged, not raised."""
        try:
            await call
        except DeliveryError as error:
            log.warning("shared queue: %s (it will be done again later)", error.summary)
