"""One mail's delivery: parse, upload its attachments once, then one contact per target.

Talks to the outside world only through the :class:`~gateway.aws.attachments.AttachmentStore` and
:class:`~gateway.aws.connect.ContactStarter` protocols; every failure arrives here already translated into
a :class:`~gateway.errors.DeliveryError` and is reported per target, never raised.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.aws.attachments import AttachmentStore, attachment_key, original_key
from gateway.aws.connect import ContactStarter
from gateway.contact.fitting import FittedMail, fit_mail
from gateway.contact.request import WITHOUT_ATTACHMENTS, StoredFile, build_request, mail_digest
from gateway.delivery.queue import MailQueue, park_in
from gateway.errors import AttachmentsRefusedError, DeliveryError, DuplicateRequestError
from gateway.mail import ReceivedMail, Target
from gateway.message.mime import parse_mail
from gateway.observe.mail_log import log_received
from gateway.observe.metrics import Metrics
from gateway.replies import EARLIER_CONTACT, Replies, Reply
from gateway.settings import AttachmentSettings, ContentPolicy

__all__ = ["DeliverNow", "Deliverer", "Outcome", "Prepared", "summary_reply", "unique_targets"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What became of one target: a contact, a contact made by an earlier attempt, or an error."""

    target: Target
    contact_id: str | None = None
    duplicate: bool = False
    error: DeliveryError | None = None

    @property
    def delivered(self) -> bool:
        return self.error is None


def unique_targets(targets: Iterable[Target]) -> list[Target]:
    """One target per instance and destination, first one wins (``a@x`` and ``a+tag@x`` are one contact)."""
    seen: dict[tuple[str, str], Target] = {}
    for target in targets:
        seen.setdefault(target.key, target)
    return list(seen.values())


@dataclass(frozen=True)
class Prepared:
    """A target and the request built for it, ready to be sent (and stored, to be resent unchanged)."""

    target: Target
    request: dict[str, Any]


RelatedLookup = Callable[[Target], Awaitable[str | None]]


class Deliverer:
    """Parse and fit a mail, upload what goes with it, build requests, start contacts."""

    def __init__(
        self,
        store: AttachmentStore,
        contacts: ContactStarter,
        settings: AttachmentSettings,
        policy: ContentPolicy | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        self._contacts = contacts
        self._settings = settings
        self._policy = policy or ContentPolicy()
        self.metrics = metrics or Metrics()

    def fit(self, raw: bytes) -> FittedMail:
        return fit_mail(parse_mail(raw), self._policy)

    async def deliver(
        self, raw: bytes, targets: Sequence[Target], envelope_sender: str = ""
    ) -> list[Outcome]:
        """Everything at once, for the ``sync`` mode: upload, build and start each contact."""
        fitted = self.fit(raw)
        chosen = unique_targets(targets)
        try:
            prepared = await self.prepare(raw, fitted, chosen, envelope_sender)
        except DeliveryError as error:
            return [Outcome(target, error=error) for target in chosen]
        outcomes = []
        for item in prepared:
            outcome = await self.start(item.target, item.request)
            if isinstance(outcome.error, AttachmentsRefusedError):
                outcome = await self._retry_without_attachments(
                    raw, fitted, item, envelope_sender, outcome.error
                )
            outcomes.append(outcome)
        return outcomes

    async def _retry_without_attachments(
        self, raw: bytes, fitted: FittedMail, item: Prepared, sender: str, refusal: AttachmentsRefusedError
    ) -> Outcome:
        try:
            request = await self.without_attachments(raw, fitted, item, sender, refusal)
        except DeliveryError as error:
            return Outcome(item.target, error=error)
        return await self.start(item.target, request)

    async def prepare(
        self,
        raw: bytes,
        fitted: FittedMail,
        targets: Sequence[Target],
        envelope_sender: str,
        related: RelatedLookup | None = None,
    ) -> list[Prepared]:
        """Upload the attachments (and the original, when needed) once, then one request per target."""
        files = await self._upload(raw, fitted)
        original = await self._keep_original(raw, fitted)
        prepared = []
        for target in targets:
            related_id = await related(target) if related else None
            request = build_request(fitted, target, raw, files, envelope_sender, related_id, original)
            prepared.append(Prepared(target, request))
        return prepared

    async def without_attachments(
        self, raw: bytes, fitted: FittedMail, item: Prepared, sender: str, refusal: AttachmentsRefusedError
    ) -> dict[str, Any]:
        """The request once more, without the attachments Connect refused, naming them and linking the
        original; its own ClientToken keeps this one idempotent too."""
        log.warning("Connect refused the attachments (%s); delivering without them", refusal.reason)
        stripped = fitted.without_attachments(f"Amazon Connect refused the attachments: {refusal.reason}")
        original = await self._keep_original(raw, stripped)
        related_id = item.request.get("RelatedContactId")
        return build_request(
            stripped, item.target, raw, (), sender, related_id, original, WITHOUT_ATTACHMENTS
        )

    async def start(self, target: Target, request: dict[str, Any]) -> Outcome:
        """One StartEmailContact call; never raises a DeliveryError, reports it."""
        try:
            contact_id = await self._contacts.start(request)
        except DuplicateRequestError:
            return Outcome(target, duplicate=True)
        except DeliveryError as error:
            return Outcome(target, error=error)
        self.metrics.contacts.inc()
        return Outcome(target, contact_id=contact_id)

    async def _keep_original(self, raw: bytes, fitted: FittedMail) -> str | None:
        """The original message in S3 whenever the contact leaves something out (or always, if asked)."""
        if not fitted.omissions and self._settings.store_original != "always":
            return None
        return await self._store.keep(
            original_key(self._settings.prefix, mail_digest(raw)), raw, "message/rfc822"
        )

    async def _upload(self, raw: bytes, fitted: FittedMail) -> list[StoredFile]:
        """Every attachment that fits, stored once per mail; raises DeliveryError."""
        if not fitted.attachments:
            return []
        digest = mail_digest(raw)
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(
                        self._store.store(
                            attachment_key(self._settings.prefix, digest, index),
                            attachment.data,
                            attachment.content_type,
                            name,
                        )
                    )
                    for index, (attachment, name) in enumerate(
                        zip(fitted.attachments, fitted.names, strict=True), start=1
                    )
                ]
        except* DeliveryError as group_error:
            raise group_error.exceptions[0] from None
        self.metrics.attachments.inc(len(tasks))
        self.metrics.attachment_bytes.inc(sum(len(a.data) for a in fitted.attachments))
        return [StoredFile(name, task.result()) for name, task in zip(fitted.names, tasks, strict=True)]


def summary_reply(outcomes: Sequence[Outcome]) -> Reply:
    """The one SMTP reply for a mail delivered while the client waits (sync mode).

    Any transient failure: 4xx, and the client's retry is idempotent. All failed for good: the first
    permanent reply. Otherwise 250 naming the contacts.
    """
    transient = [o.error for o in outcomes if o.error is not None and o.error.transient]
    if transient:
        return transient[0].reply
    delivered = [o for o in outcomes if o.delivered]
    if not delivered:
        failed = [o.error for o in outcomes if o.error is not None]
        return failed[0].reply if failed else Replies.LOCAL_ERROR
    contacts = ", ".join(o.contact_id or EARLIER_CONTACT for o in delivered)
    refused = len(outcomes) - len(delivered)
    if refused:
        return Replies.PARTLY_DELIVERED.format(contacts=contacts, refused=refused)
    return Replies.DELIVERED.format(contacts=contacts)


class DeliverNow:
    """The ``sync`` sink: deliver while the SMTP client waits, and answer with the outcome.

    A 4xx answer makes the client retry later; the retry is idempotent thanks to the ClientToken.
    """

    def __init__(self, deliverer: Deliverer, parking: MailQueue | None = None) -> None:
        self._deliverer = deliverer
        self._parking = parking

    def room_for(self, size: int) -> Reply | None:
        return None  # nothing is stored

    async def park(self, mail: ReceivedMail) -> Reply:
        """Automatic mail under the ``drop`` policy: kept in the spool, never destroyed."""
        if self._parking is None:  # the service opens the spool whenever the policy is "drop"
            return Replies.LOCAL_ERROR
        return await park_in(self._parking, mail)

    async def accept(self, mail: ReceivedMail) -> Reply:
        started = time.monotonic()
        outcomes = await self._deliverer.deliver(mail.content.read(), mail.targets, mail.sender)
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
