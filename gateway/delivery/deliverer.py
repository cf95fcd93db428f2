"""The one delivery path: a mail's targets into contacts, whatever the mode.

A mail is first read (parsed and fitted) by :meth:`Deliverer.read`, in a killable worker process
(:mod:`.reading`); one that cannot be read becomes :meth:`Deliverer.unreadable`'s contact instead. Then,
for each target still to deliver: its request (the one stored by an earlier attempt, resent unchanged so
that Connect's idempotency answers with the same ContactId, or one built now, the attachments and, when
something is left out, the original uploaded once for the whole mail), then ``StartEmailContact``; when
Connect refuses the attachments themselves, the contact once more without them, naming them and linking
the original. Sync mode and the spool's workers both deliver through :meth:`Deliverer.deliver`; they
differ only in how they pace the calls (a :class:`Pacer`), where a built request is kept (``save``), and
what they make of the outcomes.

Talks to the outside world only through the :class:`~gateway.aws.attachments.AttachmentStore` and
:class:`~gateway.aws.connect.ContactStarter` protocols; every failure arrives here already translated into
a :class:`~gateway.errors.DeliveryError` and is reported per target, never raised.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from gateway.aws.attachments import AttachmentStore, attachment_key, original_key
from gateway.aws.connect import ContactStarter
from gateway.contact.fitting import FittedMail, unreadable_mail
from gateway.contact.request import WITHOUT_ATTACHMENTS, MailHash, StoredFile, build_request
from gateway.delivery.reading import MailReader, MailSource, ReadMail, read_here
from gateway.errors import AttachmentsRefusedError, DeliveryError, DuplicateRequestError, ThrottledError
from gateway.mail import MailContent, Target
from gateway.message.mime import HEADER_BYTES
from gateway.observe.metrics import Metrics
from gateway.settings import AttachmentSettings, ContentPolicy, StoreOriginal
from gateway.trust.results import TrustResult

if TYPE_CHECKING:
    from types_aiobotocore_connect.type_defs import StartEmailContactRequestTypeDef

__all__ = ["UNPACED", "Deliverer", "Outcome", "Pacer", "Pending", "unique_targets"]

log = logging.getLogger(__name__)

INLINE_HASH_BYTES = 256 * 1024  # larger mails are hashed in a thread, from their file
HASH_CHUNK_BYTES = 1024 * 1024
HEADER_LIMIT = HEADER_BYTES  # what is read of a mail that cannot be read whole


def unique_targets(targets: Iterable[Target]) -> list[Target]:
    """One target per instance and destination, first one wins (``a@x`` and ``a+tag@x`` are one contact)."""
    seen: dict[tuple[str, str], Target] = {}
    for target in targets:
        seen.setdefault(target.key, target)
    return list(seen.values())


@dataclass(frozen=True)
class Pending:
    """A target still to deliver; ``request`` is the one an earlier attempt stored (None: build it now).
    ``position`` is the caller's name for it (the spool's)."""

    target: Target
    request: StartEmailContactRequestTypeDef | None = None
    position: int = 0


@dataclass(frozen=True)
class Outcome:
    """What became of one target: a contact, a contact made by an earlier attempt, or an error."""

    pending: Pending
    contact_id: str | None = None
    duplicate: bool = False
    error: DeliveryError | None = None

    @property
    def target(self) -> Target:
        return self.pending.target

    @property
    def delivered(self) -> bool:
        return self.error is None


class Pacer(Protocol):
    """How fast contacts may be started: the spool's governor, or no pacing at all (sync mode, where the
    sending MTA waits and paces itself)."""

    async def acquire(self) -> None: ...

    def throttled(self) -> None: ...


class _Unpaced:
    async def acquire(self) -> None:
        return None

    def throttled(self) -> None:
        return None


UNPACED: Pacer = _Unpaced()

SaveRequest = Callable[[Pending, "StartEmailContactRequestTypeDef"], Awaitable[None]]
RelatedLookup = Callable[[Target], Awaitable[str | None]]


async def _keep_nothing(pending: Pending, request: StartEmailContactRequestTypeDef) -> None:
    return None


class Deliverer:
    """Read a mail (off the event loop), upload what goes with it, build requests, start contacts."""

    def __init__(
        self,
        store: AttachmentStore,
        contacts: ContactStarter,
        settings: AttachmentSettings,
        policy: ContentPolicy | None = None,
        metrics: Metrics | None = None,
        reader: MailReader | None = None,
    ) -> None:
        """Without a ``reader`` (``mail-gateway parse``), mails are read in a thread of this process."""
        self._store = store
        self._contacts = contacts
        self._settings = settings
        self._policy = policy or ContentPolicy()
        self._reader = reader
        self.metrics = metrics or Metrics()

    async def read(
        self, content: MailContent, source: MailSource | None = None, verdicts: TrustResult | None = None
    ) -> ReadMail:
        """The mail parsed and fitted (without the files the virus scan found infected);
        :class:`~gateway.errors.UnreadableError` when it cannot be."""
        infected = verdicts.strip if verdicts is not None else ()
        if self._reader is None:
            return await asyncio.to_thread(read_here, content.read(), self._policy, infected=infected)
        return await self._reader.read(source or MailSource.of(content), infected)

    async def unreadable(self, content: MailContent, reason: str) -> ReadMail:
        """The contact of a mail that could not be read: its header, a body that says so, the original
        stored and linked (nothing is lost)."""
        fitted = await asyncio.to_thread(unreadable_mail, content.head(HEADER_LIMIT), reason)
        return ReadMail(fitted, ())

    async def deliver(
        self,
        content: MailContent,
        read: ReadMail,
        sender: str,
        pending: Sequence[Pending],
        *,
        pacer: Pacer = UNPACED,
        save: SaveRequest = _keep_nothing,
        related: RelatedLookup | None = None,
        verdicts: TrustResult | None = None,
    ) -> AsyncIterator[Outcome]:
        """Each pending target's outcome, in order. After a transient error the rest waits too (the same
        fault would meet them): the outcomes end there. ``verdicts``: what the trust checks found at DATA,
        for the contact's headers and attributes."""
        mail = _Mail(self, content, read, await _hash(content), verdicts)
        for item in pending:
            request = item.request
            if request is None:
                try:
                    request = await self._build(mail, item.target, sender, related)
                except DeliveryError as error:
                    yield Outcome(item, error=error)
                    if error.transient:
                        return
                    continue
                await save(item, request)
            outcome = await self._start(item, request, pacer)
            if isinstance(outcome.error, AttachmentsRefusedError):
                outcome = await self._without_attachments(
                    mail, item, request, sender, outcome.error, pacer, save
                )
            yield outcome
            if outcome.error is not None and outcome.error.transient:
                return

    async def build(
        self,
        content: MailContent,
        read: ReadMail,
        targets: Sequence[Target],
        sender: str,
        related: RelatedLookup | None = None,
    ) -> list[StartEmailContactRequestTypeDef]:
        """The requests the targets would get, with their attachments uploaded (``parse`` and tests)."""
        mail = _Mail(self, content, read, await _hash(content))
        return [await self._build(mail, target, sender, related) for target in targets]

    async def _build(
        self, mail: _Mail, target: Target, sender: str, related: RelatedLookup | None
    ) -> StartEmailContactRequestTypeDef:
        stored, original = await mail.uploaded()
        related_id = await related(target) if related else None
        return build_request(
            mail.fitted, target, mail.hash, stored, sender, related_id, original, verdicts=mail.verdicts
        )

    async def _without_attachments(
        self,
        mail: _Mail,
        item: Pending,
        request: StartEmailContactRequestTypeDef,
        sender: str,
        refusal: AttachmentsRefusedError,
        pacer: Pacer,
        save: SaveRequest,
    ) -> Outcome:
        """Connect refused the files themselves: the contact goes without them, naming them and linking the
        original; its own ClientToken keeps this one idempotent too."""
        log.warning("Connect refused the attachments (%s); delivering without them", refusal.reason)
        stripped = mail.fitted.without_attachments(
            f"Amazon Connect refused the attachments: {refusal.reason}"
        )
        try:
            original = await self._keep_original(mail, stripped)
        except DeliveryError as error:
            return Outcome(item, error=error)
        related_id = request.get("RelatedContactId")
        bare = build_request(
            stripped,
            item.target,
            mail.hash,
            (),
            sender,
            related_id,
            original,
            WITHOUT_ATTACHMENTS,
            verdicts=mail.verdicts,
        )
        await save(item, bare)
        return await self._start(item, bare, pacer)

    async def _start(self, item: Pending, request: StartEmailContactRequestTypeDef, pacer: Pacer) -> Outcome:
        """One StartEmailContact call, paced; never raises a DeliveryError, reports it."""
        await pacer.acquire()
        try:
            contact_id = await self._contacts.start(request)
        except DuplicateRequestError:
            return Outcome(item, duplicate=True)
        except DeliveryError as error:
            if isinstance(error, ThrottledError):
                pacer.throttled()
            return Outcome(item, error=error)
        self.metrics.contacts.inc()
        return Outcome(item, contact_id=contact_id)

    async def _keep_original(self, mail: _Mail, fitted: FittedMail) -> str | None:
        """The original message in S3 whenever the contact leaves something out (or always, if asked),
        except a mail with a virus in it: its original would carry the virus."""
        if not fitted.omissions and self._settings.store_original != StoreOriginal.ALWAYS:
            return None
        if mail.infected:
            return None
        key = original_key(self._settings.prefix, mail.hash.hexdigest)
        return await self._store.keep(key, mail.content, "message/rfc822")

    async def _upload(self, read: ReadMail, mail_hash: MailHash) -> list[StoredFile]:
        """Every attachment that fits, stored once per mail, streamed from memory or its file; raises
        DeliveryError."""
        fitted = read.fitted
        if not fitted.attachments:
            return []
        prefix, digest = self._settings.prefix, mail_hash.hexdigest
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(
                        self._store.store(
                            attachment_key(prefix, digest, index), body, attachment.content_type, name
                        )
                    )
                    for index, (attachment, body, name) in enumerate(
                        zip(fitted.attachments, read.bodies, fitted.names, strict=True), start=1
                    )
                ]
        except* DeliveryError as group_error:
            raise group_error.exceptions[0] from None
        self.metrics.attachments.inc(len(tasks))
        self.metrics.attachment_bytes.inc(sum(body.size for body in read.bodies))
        return [StoredFile(name, task.result()) for name, task in zip(fitted.names, tasks, strict=True)]


async def _hash(content: MailContent) -> MailHash:
    """The mail's hash (S3 keys, ClientTokens): a large mail is read from its file in a thread."""
    if content.size <= INLINE_HASH_BYTES:
        return MailHash((content.read(),))

    def from_file() -> MailHash:
        with content.open() as stream:
            return MailHash(iter(lambda: stream.read(HASH_CHUNK_BYTES), b""))

    return await asyncio.to_thread(from_file)


class _Mail:
    """One mail in one delivery attempt: its attachments and original uploaded when the first request
    needs them, once."""

    def __init__(
        self,
        deliverer: Deliverer,
        content: MailContent,
        read: ReadMail,
        mail_hash: MailHash,
        trust: TrustResult | None = None,
    ) -> None:
        self._deliverer = deliverer
        self.content = content
        self.read = read
        self.fitted = read.fitted
        self.hash = mail_hash
        self.verdicts = trust.verdicts if trust is not None else None
        self.infected = bool(trust is not None and trust.strip)
        self._done: tuple[list[StoredFile], str | None] | None = None

    async def uploaded(self) -> tuple[list[StoredFile], str | None]:
        if self._done is None:
            files = await self._deliverer._upload(self.read, self.hash)
            original = await self._deliverer._keep_original(self, self.fitted)
            self._done = files, original
        return self._done
