"""One mail's delivery: parse, upload its attachments once, then one contact per target.

Talks to the outside world only through the :class:`~gateway.attachments.AttachmentStore` and
:class:`~gateway.connect.ContactStarter` protocols; every failure arrives here already translated into a
:class:`~gateway.errors.DeliveryError` and is reported per target, never raised.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway import contract
from gateway.attachments import AttachmentStore, attachment_key
from gateway.config import AttachmentSettings
from gateway.connect import ContactStarter
from gateway.errors import DeliveryError, DuplicateRequestError
from gateway.mime import ParsedMail, parse_mail
from gateway.replies import EARLIER_CONTACT, Replies, Reply
from gateway.request import StoredFile, attachment_names, build_request, mail_digest
from gateway.routing import Target
from gateway.smtp import ReceivedMail

__all__ = ["DeliverNow", "Deliverer", "Outcome", "summary_reply", "unique_targets"]

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


class Deliverer:
    def __init__(
        self, store: AttachmentStore, contacts: ContactStarter, settings: AttachmentSettings
    ) -> None:
        self._store = store
        self._contacts = contacts
        self._settings = settings

    async def deliver(
        self, raw: bytes, targets: Sequence[Target], envelope_sender: str = ""
    ) -> list[Outcome]:
        """Everything at once, for the ``sync`` mode: upload, build and start each contact."""
        mail = parse_mail(raw)
        chosen = unique_targets(targets)
        try:
            files = await self.upload(raw, mail)
        except DeliveryError as error:
            return [Outcome(target, error=error) for target in chosen]
        return [
            await self.start(target, build_request(mail, target, raw, files, envelope_sender))
            for target in chosen
        ]

    async def start(self, target: Target, request: dict[str, Any]) -> Outcome:
        """One StartEmailContact call; never raises a DeliveryError, reports it."""
        try:
            contact_id = await self._contacts.start(request)
        except DuplicateRequestError:
            return Outcome(target, duplicate=True)
        except DeliveryError as error:
            return Outcome(target, error=error)
        return Outcome(target, contact_id=contact_id)

    async def upload(self, raw: bytes, mail: ParsedMail) -> list[StoredFile]:
        """Every attachment Connect can take, stored once per mail; raises DeliveryError."""
        attachments = mail.attachments[: contract.limits().attachments]
        if not attachments:
            return []
        names = attachment_names(a.filename for a in attachments)
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
                    for index, (attachment, name) in enumerate(zip(attachments, names, strict=True), start=1)
                ]
        except* DeliveryError as group_error:
            raise group_error.exceptions[0] from None
        return [StoredFile(name, task.result()) for name, task in zip(names, tasks, strict=True)]


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

    def __init__(self, deliverer: Deliverer) -> None:
        self._deliverer = deliverer

    def room_for(self, size: int) -> Reply | None:
        return None  # nothing is stored

    async def accept(self, mail: ReceivedMail) -> Reply:
        outcomes = await self._deliverer.deliver(mail.raw, mail.targets, mail.sender)
        for outcome in outcomes:
            if outcome.error is not None:
                log.warning("delivery to %s failed: %s", outcome.target.route.instance_id, outcome.error)
        return summary_reply(outcomes)
