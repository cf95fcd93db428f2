"""Delivery workers: take queued mail (the spool's, or the shared queue's in sqs mode: any
:class:`~.queue.MailQueue`), make its contacts, and record what happened.

For each mail: read it (parse and fit, in a killable reader process: :mod:`.reading`), upload its
attachments, build one request per target and store it (once: retries resend the stored request
unchanged, so Connect's idempotency answers with the same ContactId), then start the contacts through the
:class:`~.governor.Governors` (one per Connect quota: account and region; in sqs mode each is a bucket
every gateway shares). Transient failures are retried with exponential back-off and jitter until
``max_age`` or ``max_attempts``; permanent ones go to the dead-letter area at once, and the sender is
told (:mod:`.dsn`). On shutdown, deliveries under way may finish within the grace period; the rest stays
queued for the next start.

Nothing stops a worker but shutdown. A mail that cannot be read within its budget, or that has made the
delivery fail unexpectedly :data:`POISON_FAILURES` times, is poison: it is not retried blindly but becomes
a contact saying it could not be read, with the original stored and linked (``[queue] unreadable =
"contact"``), or a dead letter with a notification (``"dead"``). Any error in claiming, deferring or
recording (a full disk) is logged, counted and waited out with back-off; a supervisor restarts a worker
that ended all the same, and :meth:`DeliveryWorkers.health` tells ``/readyz`` the truth about both.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from gateway.contact.request import thread_ids
from gateway.delivery.deliverer import Deliverer, Outcome, Pending
from gateway.delivery.dsn import Failure, build_notification, send_notification
from gateway.delivery.governor import Governors
from gateway.delivery.queue import MailQueue
from gateway.delivery.reading import MailSource, ReadMail
from gateway.delivery.spool import LEASE_SECONDS, Notice, QueuedMail, TargetState
from gateway.errors import DeliveryError, PermanentError, ThrottledError, UnreadableError
from gateway.mail import MailContent, Target
from gateway.message.mime import HEADER_BYTES
from gateway.observe.mail_log import log_mail, loggable
from gateway.replies import Replies
from gateway.settings import QueueSettings, Unreadable
from gateway.trust.results import TrustResult

if TYPE_CHECKING:
    from types_aiobotocore_connect.type_defs import StartEmailContactRequestTypeDef

__all__ = ["POISON_FAILURES", "DeliveryWorkers", "backoff"]

log = logging.getLogger(__name__)

URL_FRESHNESS = 0.8  # rebuild a stored request once its presigned URLs have lived this share of their life
IDLE_POLL_SECONDS = 1.0  # operator commands change the spool from outside: look again at least this often
MAINTENANCE_SECONDS = 60.0
SUPERVISION_SECONDS = 1.0
WORKER_RETRY_INITIAL = 0.1  # after an error a worker survived (a full disk): back-off from here...
WORKER_RETRY_MAX = 10.0  # ...up to here
POISON_FAILURES = 3  # unexpected failures of one mail before it is treated as unreadable
# A mail whose Connect quota would keep a worker waiting longer than this is put back until then, so
# that a throttled region never holds the workers that other regions' mail needs.
BUSY_QUOTA_SECONDS = 5.0


def backoff(
    attempts: int, initial: float, ceiling: float, jitter: Callable[[], float] = random.random
) -> float:
    """Seconds before the next try: doubling from ``initial`` up to ``ceiling``, half of it random."""
    delay = min(ceiling, initial * 2.0 ** max(0, attempts))
    return float(delay / 2 + delay / 2 * jitter())


def _verdicts(item: QueuedMail) -> TrustResult | None:
    """What the trust checks found at DATA, stored beside the mail."""
    return TrustResult.from_json(json.loads(item.verdicts)) if item.verdicts else None


def _after(item: QueuedMail, delivered: dict[int, str | None]) -> QueuedMail:
    """The claimed mail with this attempt's deliveries (position: ContactId) applied: the targets' states
    and ContactIds that concluding needs, without a trip to the queue to read them back."""
    return replace(
        item,
        targets=tuple(
            replace(t, state=TargetState.DELIVERED, contact_id=delivered[t.position] or t.contact_id)
            if t.position in delivered
            else t
            for t in item.targets
        ),
    )


def _age(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds:.0f} seconds"


class DeliveryWorkers:
    def __init__(
        self,
        queue: MailQueue,
        deliverer: Deliverer,
        governors: Governors,
        settings: QueueSettings,
        *,
        hostname: str,
        url_expiry_seconds: float,
        maintenance_seconds: float = MAINTENANCE_SECONDS,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        self._queue = queue
        self._deliverer = deliverer
        self._metrics = deliverer.metrics
        self._governors = governors
        self._settings = settings
        self._hostname = hostname
        self._url_life = url_expiry_seconds * URL_FRESHNESS
        self._maintenance_seconds = maintenance_seconds
        self._lease_seconds = lease_seconds
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._others: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._workers = [self._worker(loop, n) for n in range(self._settings.workers)]
        self._others = [
            loop.create_task(self._maintain(), name="spool-maintenance"),
            loop.create_task(self._supervise(), name="delivery-supervisor"),
        ]

    def _worker(self, loop: asyncio.AbstractEventLoop, number: int) -> asyncio.Task[None]:
        return loop.create_task(self._work(), name=f"delivery-{number}")

    def wake(self) -> None:
        """New mail was queued: a sleeping worker should look now."""
        self._wake.set()

    def health(self) -> tuple[bool, str]:
        """Whether every worker is running (the supervisor restarts one within a second)."""
        running = sum(1 for task in self._workers if not task.done())
        if running < len(self._workers):
            return False, f"{len(self._workers) - running} of {len(self._workers)} delivery workers stopped"
        return True, "ok"

    async def stop(self) -> None:
        """Finish deliveries under way within the grace period; whatever is cut short stays queued."""
        self._stopped.set()
        self._wake.set()
        tasks = self._workers + self._others
        _, unfinished = await asyncio.wait(tasks, timeout=self._settings.shutdown_grace)
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _supervise(self) -> None:
        """A worker that ended (it should not: :meth:`_work` survives everything) is logged and replaced."""
        loop = asyncio.get_running_loop()
        while not self._stopped.is_set():
            for number, task in enumerate(self._workers):
                if task.done() and not self._stopped.is_set():
                    error = None if task.cancelled() else task.exception()
                    log.error("delivery worker %d ended (%r); starting it again", number, error)
                    self._metrics.worker_errors.inc()
                    self._workers[number] = self._worker(loop, number)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), timeout=SUPERVISION_SECONDS)

    async def _work(self) -> None:
        """Claim and deliver until stopped. Nothing ends this loop but shutdown: an error in the spool
        (a full disk) or a bug is logged, counted, and waited out with back-off."""
        failures = 0
        while not self._stopped.is_set():
            try:
                item = await self._queue.claim()
                if item is None:
                    await self._idle()
                    continue
            except Exception:
                failures += 1
                await self._survive(failures, "could not take mail from the spool")
                continue
            failures = 0
            await self._attempt(item)

    async def _attempt(self, item: QueuedMail) -> None:
        try:
            async with self._leased(item.id):
                await self._deliver(item)
            return
        except asyncio.CancelledError:  # shutdown cut it short: it stays queued, nothing is lost
            await asyncio.shield(self._queue.release(item.id))
            raise
        except Exception:  # a bug, or a spool that cannot record the outcome: the mail is tried again
            log.exception("delivery of %s failed unexpectedly", item.id)
            self._metrics.worker_errors.inc()
        # Until the spool takes this, the mail is claimed by nobody: keep trying (a full disk clears).
        failures = 0
        while not self._stopped.is_set():
            try:
                await self._after_failure(item)
                return
            except Exception:
                failures += 1
                await self._survive(failures, f"could not put {item.id} back into the spool")

    async def _after_failure(self, item: QueuedMail) -> None:
        """An unexpected failure: retried, unless the mail is too old or has failed too often (poison)."""
        failures = await self._queue.count_failure(item.id)
        age = time.time() - item.received_at
        if age > self._settings.max_age or item.attempts + 1 >= self._settings.max_attempts:
            reason = f"gave up after {_age(age)} and {item.attempts + 1} attempts; last error: internal error"
            await self._bury(item.id, reason, reason)
        elif failures >= POISON_FAILURES:
            log.error("%s failed unexpectedly %d times: treated as unreadable", item.id, failures)
            await self._unreadable(item, f"delivering it failed unexpectedly {failures} times")
        else:
            until = time.time() + self._settings.retry_initial
            await self._queue.defer(item.id, until, "internal error", attempt=True)

    async def _survive(self, failures: int, what: str) -> None:
        """Log and count an error a worker lives through, then wait before trying again."""
        delay = backoff(failures, WORKER_RETRY_INITIAL, WORKER_RETRY_MAX)
        log.exception("delivery worker: %s; trying again in %.1fs", what, delay)
        self._metrics.worker_errors.inc()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), timeout=delay)

    @contextlib.asynccontextmanager
    async def _leased(self, mail_id: str) -> AsyncIterator[None]:
        """Keep the claim on a mail alive while it is delivered (a long read, large uploads)."""

        async def renew() -> None:
            while True:
                await asyncio.sleep(self._lease_seconds / 3)
                with contextlib.suppress(Exception):  # a missed renewal is tried again a third later
                    await self._queue.renew(mail_id)

        renewing = asyncio.get_running_loop().create_task(renew())
        try:
            yield
        finally:
            renewing.cancel()

    async def _idle(self) -> None:
        due = await self._queue.next_due()
        wait = IDLE_POLL_SECONDS if due is None else min(IDLE_POLL_SECONDS, max(0.0, due - time.time()))
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=wait)

    async def _busy_quota(self, item: QueuedMail) -> float:
        """How long the busiest Connect quota of the mail's pending targets would keep a worker waiting."""
        waits = [0.0]
        for target in item.pending:
            try:
                place = await self._deliverer.place(target.target.route)
            except DeliveryError:  # the delivery itself will say so
                continue
            waits.append(self._governors(place.quota).wait())
        return max(waits)

    async def _deliver(self, item: QueuedMail) -> None:
        """Read the mail, then its pending targets through the one delivery path; a mail whose quota is
        busy for long waits in the spool, not in a worker."""
        wait = await self._busy_quota(item)
        if wait > BUSY_QUOTA_SECONDS:
            log.info("%s deferred for %.1fs: its Connect quota is busy", item.id, wait)
            await self._queue.defer(item.id, time.time() + wait, "Connect's quota is busy", attempt=False)
            return
        content = self._content(item)
        verdicts = _verdicts(item)
        source = MailSource.of(content)
        try:
            read = await self._deliverer.read(content, source, verdicts)
        except UnreadableError as error:
            log.warning("%s could not be read: %s", item.id, error)
            await self._unreadable(item, str(error))
            return
        try:
            await self._deliver_read(item, content, read)
        finally:
            read.discard()

    def _content(self, item: QueuedMail) -> MailContent:
        assert item.content is not None, "a claimed mail comes with its content"
        return item.content

    async def _unreadable(self, item: QueuedMail, reason: str) -> None:
        """Poison: a contact that says the mail could not be read (the original linked), or a dead
        letter, as ``[queue] unreadable`` says."""
        self._metrics.unreadable.inc()
        if self._settings.unreadable == Unreadable.DEAD:
            current = await self._queue.get(item.id)
            error = PermanentError(reason, Replies.UNREADABLE, service="gateway", code="Unreadable")
            for target in current.pending if current else []:
                await self._queue.failed(item.id, target.position, error)
            await self._bury(item.id, f"could not be read: {reason}", "could not be read")
            return
        read = await self._deliverer.unreadable(self._content(item), reason)
        await self._deliver_read(item, self._content(item), read)

    async def _deliver_read(self, item: QueuedMail, content: MailContent, read: ReadMail) -> None:
        now = time.time()
        fitted = read.fitted
        threads = thread_ids(fitted.mail)
        message_ids = [fitted.mail.message_id] if fitted.mail.message_id else []

        async def related(target: Target) -> str | None:
            if not threads:  # not a reply: nothing to look up (no trip to the spool's thread)
                return None
            return await self._queue.related_contact(target.route.instance_id, threads)

        async def save(pending: Pending, request: StartEmailContactRequestTypeDef) -> None:
            await self._queue.save_request(item.id, pending.position, request, time.time())

        pending = [
            Pending(t.target, None if now - (t.built_at or 0) > self._url_life else t.request, t.position)
            for t in item.pending
        ]
        transient: Outcome | None = None
        delivered: dict[int, str | None] = {}  # position: ContactId, of this attempt
        refused = False
        outcomes = self._deliverer.deliver(
            content,
            read,
            item.sender,
            pending,
            pacing=self._governors,
            save=save,
            related=related,
            verdicts=_verdicts(item),
        )
        async for outcome in outcomes:
            position = outcome.pending.position
            if outcome.error is None:
                await self._queue.delivered(item.id, position, outcome.contact_id, message_ids)
                delivered[position] = outcome.contact_id
            elif outcome.error.transient:
                transient = outcome
            else:
                error = outcome.error
                logged = loggable(str(error), error.summary)
                log.warning("%s: %s refused for good: %s", item.id, outcome.target.destination, logged)
                await self._queue.failed(item.id, position, error)
                refused = True
        await self._conclude(item, transient, None if refused else _after(item, delivered))

    async def _conclude(self, item: QueuedMail, outcome: Outcome | None, known: QueuedMail | None) -> None:
        """Done, deferred, or dead (with a notification), from the state of the mail's targets (``known``:
        as they are now, when this attempt only delivered; else they are read back from the queue)."""
        now = time.time()
        if outcome is not None and outcome.error is not None:
            transient = outcome.error
            age = now - item.received_at
            attempts = item.attempts + 1
            if age <= self._settings.max_age and attempts < self._settings.max_attempts:
                throttled = isinstance(transient, ThrottledError)
                delay = (
                    self._governors(outcome.quota).interval * (1 + random.random())  # noqa: S311 - jitter
                    if throttled and outcome.quota is not None
                    else backoff(item.attempts, self._settings.retry_initial, self._settings.retry_max)
                )
                logged = loggable(str(transient), transient.summary)
                log.info("%s deferred for %.1fs: %s", item.id, delay, logged)
                await self._queue.defer(item.id, now + delay, str(transient), attempt=not throttled)
                self._metrics.retries.inc()
                return
            expired = Replies.EXPIRED.format(age=_age(age))
            current = await self._queue.get(item.id)
            for target in current.pending if current else []:
                await self._queue.failed(item.id, target.position, transient, expired)
            given_up = f"gave up after {_age(age)} and {attempts} attempts; last error: "
            await self._bury(item.id, given_up + str(transient), given_up + transient.summary)
            return
        current = known or await self._queue.get(item.id)
        assert current is not None
        refused = [t for t in current.targets if t.state == TargetState.FAILED]
        if refused:
            await self._bury(
                item.id,
                "; ".join(t.error or "" for t in refused),
                "; ".join(": ".join(filter(None, (t.error_service, t.error_code))) for t in refused),
            )
        else:
            await self._queue.finish(item.id)
            self._metrics.delivery.observe(now - item.received_at)
            self._log(current, "delivered", now)

    def _log(self, mail: QueuedMail, outcome: str, now: float, reason: str | None = None) -> None:
        log_mail(
            outcome=outcome,
            queue_id=mail.id,
            message_id=mail.message_id,
            recipients=len(mail.recipients),
            contacts=[t.contact_id for t in mail.targets if t.contact_id],
            duration=now - mail.received_at,
            reason=reason,
            personal={"sender": mail.sender, "to": list(mail.recipients)},
        )

    async def _bury(self, mail_id: str, reason: str, summary: str) -> None:
        """Into the dead-letter area with ``reason`` (kept whole in the spool); the log says ``summary``,
        which names errors without the personal data their messages may echo."""
        logged = loggable(reason, summary)
        log.warning("%s moved to the dead-letter area: %s", mail_id, logged)
        await self._queue.bury(mail_id, reason)
        self._metrics.dead_letters.inc()
        mail = await self._queue.get(mail_id)
        if mail is not None:
            self._log(mail, "dead", time.time(), logged)
        await self._notify(mail_id)

    async def _notify(self, mail_id: str) -> None:
        """The delivery status notification for a dead mail, through the smarthost."""
        mail = await self._queue.get(mail_id)
        if mail is None or mail.content is None:
            return
        if not mail.sender:
            await self._queue.set_notice(mail_id, Notice.NOT_NEEDED)
            return
        smarthost = self._settings.smarthost
        if smarthost is None:
            log.warning("%s: no [queue] smarthost configured: the sender is not notified", mail_id)
            await self._queue.set_notice(mail_id, Notice.UNSENT)
            self._metrics.notifications.labels("unsent").inc()
            return
        failures = [
            Failure(recipient, t.reply.status if t.reply else "5.0.0", str(t.reply or ""))
            for t in mail.targets
            if t.state == TargetState.FAILED
            for recipient in t.recipients
        ]
        message = build_notification(
            hostname=self._hostname,
            sender=mail.sender,
            queue_id=mail.id,
            arrival=datetime.fromtimestamp(mail.received_at, UTC),
            raw=mail.content.head(HEADER_BYTES),
            failures=failures,
        )
        try:
            await send_notification(smarthost, mail.sender, message)
        except Exception as error:  # smtplib and sockets raise many kinds; the notice is retried later
            log.warning("%s: the notification could not be sent yet: %s", mail_id, error)
            await self._queue.set_notice(mail_id, Notice.FAILED)
            self._metrics.notifications.labels("failed").inc()
            return
        await self._queue.set_notice(mail_id, Notice.SENT)
        self._metrics.notifications.labels("sent").inc()

    async def _maintain(self) -> None:
        while not self._stopped.is_set():
            try:
                await self._queue.purge()
                for mail_id in await self._queue.awaiting_notice():
                    await self._notify(mail_id)
            except Exception:
                log.exception("spool maintenance failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), timeout=self._maintenance_seconds)
