"""The queue between SMTP and Connect, as the rest of the gateway sees it.

:class:`MailQueue` is the small interface the SMTP intake and the delivery workers use; :class:`LocalQueue`
implements it over the SQLite :class:`~.spool.Spool`, in one thread of its own so that disk writes
never stall the event loop. A shared queue for several gateways (raw mail in S3, work items in SQS) would
be another implementation of the same interface. :class:`SpoolIntake` is the ``spool`` mode's
:class:`~gateway.mail.MailSink`: the 250 goes out only once the mail is on disk.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

from gateway.delivery.spool import QueuedMail, Spool
from gateway.errors import ConfigError
from gateway.mail import ReceivedMail
from gateway.observe.mail_log import log_received
from gateway.replies import Replies, Reply

__all__ = ["LocalQueue", "MailQueue", "SpoolIntake", "park_in"]

log = logging.getLogger(__name__)

T = TypeVar("T")
LOCK_FILE = "gateway.lock"


class MailQueue(Protocol):
    async def put(self, mail: ReceivedMail) -> str: ...
    async def park(self, mail: ReceivedMail) -> str: ...
    async def claim(self) -> QueuedMail | None: ...
    async def get(self, mail_id: str) -> QueuedMail | None: ...
    async def next_due(self) -> float | None: ...
    async def save_request(
        self, mail_id: str, position: int, request: dict[str, Any], built_at: float
    ) -> None: ...
    async def delivered(
        self, mail_id: str, position: int, contact_id: str | None, thread_ids: Sequence[str]
    ) -> None: ...
    async def failed(self, mail_id: str, position: int, error: str, reply: str) -> None: ...
    async def defer(self, mail_id: str, until: float, error: str, *, attempt: bool) -> None: ...
    async def release(self, mail_id: str) -> None: ...
    async def bury(self, mail_id: str, reason: str) -> None: ...
    async def finish(self, mail_id: str) -> None: ...
    async def set_notice(self, mail_id: str, notice: str) -> None: ...
    async def awaiting_notice(self) -> list[str]: ...
    async def related_contact(self, instance_id: str, message_ids: Sequence[str]) -> str | None: ...
    async def purge(self) -> None: ...
    def free_bytes(self) -> int: ...


class LocalQueue:
    """The spool on this machine's disk, held by one gateway at a time (a lock file says which)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        self._spool: Spool | None = None
        self._lock: int | None = None
        self._waiting: list[tuple[ReceivedMail, asyncio.Future[str]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def open(self) -> int:
        """Open the spool and take it over; returns how many mails a crash had left in flight."""
        self._path.mkdir(parents=True, exist_ok=True)
        self._lock = os.open(self._path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock)
            self._lock = None
            raise ConfigError(f"queue.path: {self._path} is in use by another running gateway") from None
        self._spool = await self._run(Spool, self._path)
        return await self._call(Spool.recover)

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer  # mail already answered 250 is on disk before the spool closes
        if self._spool is not None:
            await self._call(Spool.close)
        self._executor.shutdown(wait=True)
        if self._lock is not None:
            os.close(self._lock)

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, partial(function, *args))

    async def _call(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        assert self._spool is not None, "the queue is not open"
        return await self._run(partial(method, self._spool, **kwargs), *args)

    async def put(self, mail: ReceivedMail) -> str:
        """Durable when it returns. Mails arriving while a write is under way share the next one."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting.append((mail, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_waiting())
        return await future

    async def _write_waiting(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                ids = await self._call(Spool.put_many, [mail for mail, _ in batch])
            except Exception as error:  # every mail of the batch gets the error (and a 4xx)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), queue_id in zip(batch, ids, strict=True):
                if not future.done():
                    future.set_result(queue_id)

    async def park(self, mail: ReceivedMail) -> str:
        """Keep an automatic mail without delivering it; ``queue retry`` sends it on after all."""
        return await self._call(Spool.put, mail, None, "parked")

    async def claim(self) -> QueuedMail | None:
        return await self._call(Spool.claim)

    async def get(self, mail_id: str) -> QueuedMail | None:
        return await self._call(Spool.get, mail_id, with_raw=True)

    async def next_due(self) -> float | None:
        return await self._call(Spool.next_due)

    async def save_request(
        self, mail_id: str, position: int, request: dict[str, Any], built_at: float
    ) -> None:
        await self._call(Spool.save_request, mail_id, position, request, built_at)

    async def delivered(
        self, mail_id: str, position: int, contact_id: str | None, thread_ids: Sequence[str]
    ) -> None:
        await self._call(Spool.delivered, mail_id, position, contact_id, thread_ids)

    async def failed(self, mail_id: str, position: int, error: str, reply: str) -> None:
        await self._call(Spool.failed, mail_id, position, error, reply)

    async def defer(self, mail_id: str, until: float, error: str, *, attempt: bool) -> None:
        await self._call(Spool.defer, mail_id, until, error, attempt=attempt)

    async def release(self, mail_id: str) -> None:
        await self._call(Spool.release, mail_id)

    async def bury(self, mail_id: str, reason: str) -> None:
        await self._call(Spool.bury, mail_id, reason)

    async def finish(self, mail_id: str) -> None:
        await self._call(Spool.finish, mail_id)

    async def set_notice(self, mail_id: str, notice: str) -> None:
        await self._call(Spool.set_notice, mail_id, notice)

    async def awaiting_notice(self) -> list[str]:
        return await self._call(Spool.awaiting_notice)

    async def related_contact(self, instance_id: str, message_ids: Sequence[str]) -> str | None:
        return await self._call(Spool.related_contact, instance_id, message_ids)

    async def purge(self) -> None:
        await self._call(Spool.purge)

    async def counts(self) -> dict[str, int]:
        return await self._call(Spool.counts)

    def writable(self) -> bool:
        return os.access(self._path, os.W_OK)

    def free_bytes(self) -> int:
        assert self._spool is not None
        return self._spool.free_bytes()


class SpoolIntake:
    """``spool`` mode: write the mail durably, then answer 250 with its queue id."""

    def __init__(self, queue: MailQueue, min_free_disk: int, on_queued: Callable[[], None]) -> None:
        self._queue = queue
        self._min_free_disk = min_free_disk
        self._on_queued = on_queued

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
            except sqlite3.OperationalError as error:
                log.error("could not write to the spool: %s", error)
                refusal = Replies.NO_ROOM if "full" in str(error) else Replies.LOCAL_ERROR
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
    except sqlite3.OperationalError as error:
        log.error("could not write to the spool: %s", error)
        return Replies.LOCAL_ERROR
    log.info("automatic mail from %s parked as %s", mail.peer, queue_id)
    return Replies.PARKED.format(queue_id=queue_id)
