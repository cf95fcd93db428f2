"""The sinks the front door hands a mail to, side by side: one per way of taking responsibility for it.

:class:`SpoolIntake` (``spool`` mode) answers 250 once the mail is on disk and leaves the rest to the
workers; :class:`DeliverNow` (``sync`` mode) delivers while the client waits and answers with the outcome.
Both park automatic mail under the ``drop`` policy in the spool, never destroying it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from gateway.delivery.deliverer import Deliverer, Outcome, Pending, unique_targets
from gateway.delivery.incoming import SpillingWriter
from gateway.delivery.queue import MailQueue
from gateway.errors import SpoolError, UnreadableError
from gateway.mail import MailWriter, ReceivedMail
from gateway.observe.mail_log import log_received
from gateway.replies import EARLIER_CONTACT, Replies, Reply
from gateway.settings import Unreadable
from gateway.trust.results import TrustResult

__all__ = ["DeliverNow", "SpoolIntake", "park_in", "summary_reply"]

log = logging.getLogger(__name__)


class SpoolIntake:
    """``spool`` mode: write the mail durably, then answer 250 with its queue id."""

    def __init__(self, queue: MailQueue, min_free_disk: int, on_queued: Callable[[], None]) -> None:
        self._queue = queue
        self._min_free_disk = min_free_disk
        self._on_queued = on_queued

    def writer(self) -> MailWriter:
        """A large mail goes to a file beside the spool as it arrives; keeping it is then a move."""
        return SpillingWriter(self._queue.incoming)

    def room_for(self, size: int) -> Reply | None:
        """Postfix's ``queue_minfree``: refuse new mail (4xx: it can clear) before the disk is full."""
        if self._queue.free_bytes() < self._min_free_disk + size:
            return Replies.NO_ROOM
        return None

    async def accept(self, mail: ReceivedMail) -> Reply:
        """250 once the mail is on disk; the mail's log line comes when the workers are done with it."""
        refusal = self.room_for(mail.content.size)
        if refusal is None:
            try:
                # Shielded: a client that hangs up now must not leave the write half done.
                queue_id = await asyncio.shield(self._queue.put(mail))
            except SpoolError as error:
                log.error("could not write to the spool: %s", error)
                refusal = error.reply
        if refusal is not None:
            log_received(mail, "deferred", refusal.name)
            return refusal
        self._on_queued()
        return Replies.QUEUED.format(queue_id=queue_id)

    async def park(self, mail: ReceivedMail) -> Reply:
        return await park_in(self._queue, mail)


async def park_in(queue: MailQueue, mail: ReceivedMail) -> Reply:
    """The ``drop`` policy for automatic mail: kept in the spool as ``parked``, never destroyed."""
    try:
        queue_id = await asyncio.shield(queue.park(mail))
    except SpoolError as error:
        log.error("could not write to the spool: %s", error)
        return Replies.LOCAL_ERROR
    log.info("automatic mail from %s parked as %s", mail.peer, queue_id)
    return Replies.PARKED.format(queue_id=queue_id)


def summary_reply(outcomes: Sequence[Outcome]) -> Reply:
    """The one SMTP reply for a mail delivered while the client waits (sync mode).

    Any transient failure: 4xx, and the client's retry is idempotent. All failed for good: the first
    permanent reply. Otherwise 250 naming every contact: on one line when it fits in 512 octets, else on
    the lines of a multi-line reply.
    """
    transient = [o.error for o in outcomes if o.error is not None and o.error.transient]
    if transient:
        return transient[0].reply
    delivered = [o for o in outcomes if o.delivered]
    if not delivered:
        failed = [o.error for o in outcomes if o.error is not None]
        return failed[0].reply if failed else Replies.LOCAL_ERROR
    ids = [o.contact_id or EARLIER_CONTACT for o in delivered]
    refused = len(outcomes) - len(delivered)
    if refused:
        reply = Replies.PARTLY_DELIVERED.format(contacts=", ".join(ids), refused=refused)
        many = Replies.PARTLY_DELIVERED_MANY.format(count=len(ids), refused=refused)
    else:
        reply = Replies.DELIVERED.format(contacts=", ".join(ids))
        many = Replies.DELIVERED_MANY.format(count=len(ids))
    return reply if reply.fits() else many.listing(ids, separator=", ")


class DeliverNow:
    """The ``sync`` sink: deliver while the SMTP client waits, and answer with the outcome.

    A 4xx answer makes the client retry later; the retry is idempotent thanks to the ClientToken.
    """

    def __init__(
        self,
        deliverer: Deliverer,
        incoming: Path,
        parking: MailQueue | None = None,
        unreadable: Unreadable = Unreadable.CONTACT,
    ) -> None:
        """``incoming``: where a large mail's bytes go while it arrives (and is delivered)."""
        self._deliverer = deliverer
        self._incoming = incoming
        self._parking = parking
        self._unreadable = unreadable

    def writer(self) -> MailWriter:
        return SpillingWriter(self._incoming)

    def room_for(self, size: int) -> Reply | None:
        return None  # nothing is stored

    async def park(self, mail: ReceivedMail) -> Reply:
        """Automatic mail under the ``drop`` policy: kept in the spool, never destroyed."""
        if self._parking is None:  # the service opens the spool whenever the policy is "drop"
            return Replies.LOCAL_ERROR
        return await park_in(self._parking, mail)

    async def accept(self, mail: ReceivedMail) -> Reply:
        started = time.monotonic()
        deliverer = self._deliverer
        verdicts = TrustResult.from_json(json.loads(mail.verdicts)) if mail.verdicts else None
        try:
            read = await deliverer.read(mail.content, verdicts=verdicts)
        except UnreadableError as error:
            log.warning("a mail could not be read: %s", error)
            deliverer.metrics.unreadable.inc()
            if self._unreadable == Unreadable.DEAD:
                log_received(mail, "refused", Replies.UNREADABLE.name)
                return Replies.UNREADABLE
            read = await deliverer.unreadable(mail.content, str(error))
        pending = [Pending(target) for target in unique_targets(mail.targets)]
        try:
            delivery = deliverer.deliver(mail.content, read, mail.sender, pending, verdicts=verdicts)
            outcomes = [o async for o in delivery]
        finally:
            read.discard()
        for outcome in outcomes:
            if outcome.error is not None:
                log.warning("delivery to %s failed: %s", outcome.target.route.instance_id, outcome.error)
        reply = summary_reply(outcomes)
        duration = time.monotonic() - started
        if reply.code < 400:
            self._deliverer.metrics.delivery.observe(duration)
        log_received(
            mail,
            "delivered" if reply.code < 400 else ("deferred" if reply.transient else "refused"),
            None if reply.code < 400 else reply.name,
            contacts=[o.contact_id for o in outcomes if o.contact_id],
            duration=duration,
        )
        return reply
