"""The queue between SMTP and Connect, as the rest of the gateway sees it.

:class:`MailQueue` is the small interface the SMTP intake and the delivery workers use; :class:`LocalQueue`
implements it over the SQLite :class:`~.spool.Spool`, in one thread of its own so that disk writes
never stall the event loop. A shared queue for several gateways (raw mail in S3, work items in SQS) would
be another implementation of the same interface.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from gateway.delivery.spool import INCOMING, MailState, Notice, QueuedMail, Spool
from gateway.errors import ConfigError, DeliveryError, SpoolError
from gateway.mail import ReceivedMail
from gateway.replies import Reply

if TYPE_CHECKING:
    from types_aiobotocore_connect.type_defs import StartEmailContactRequestTypeDef

__all__ = ["LocalQueue", "MailQueue"]

log = logging.getLogger(__name__)

T = TypeVar("T")
LOCK_FILE = "gateway.lock"
# The spool's methods that write: their failures (a full disk) make the gateway unready until one works.
WRITES = frozenset(
    {"put_many", "put", "claim", "save_request", "delivered", "failed", "defer", "release", "bury",
     "finish", "set_notice", "purge", "renew", "count_failure"}
)  # fmt: skip


class MailQueue(Protocol):
    async def put(self, mail: ReceivedMail) -> str: ...
    async def park(self, mail: ReceivedMail) -> str: ...
    async def claim(self) -> QueuedMail | None: ...
    async def get(self, mail_id: str) -> QueuedMail | None: ...
    async def next_due(self) -> float | None: ...
    async def save_request(
        self, mail_id: str, position: int, request: StartEmailContactRequestTypeDef, built_at: float
    ) -> None: ...
    async def delivered(
        self, mail_id: str, position: int, contact_id: str | None, thread_ids: Sequence[str]
    ) -> None: ...
    async def failed(
        self, mail_id: str, position: int, error: DeliveryError, reply: Reply | None = None
    ) -> None: ...
    async def defer(self, mail_id: str, until: float, error: str, *, attempt: bool) -> None: ...
    async def release(self, mail_id: str) -> None: ...
    async def bury(self, mail_id: str, reason: str) -> None: ...
    async def finish(self, mail_id: str) -> None: ...
    async def set_notice(self, mail_id: str, notice: Notice) -> None: ...
    async def awaiting_notice(self) -> list[str]: ...
    async def related_contact(self, instance_id: str, message_ids: Sequence[str]) -> str | None: ...
    async def purge(self) -> None: ...
    async def renew(self, mail_id: str) -> None: ...
    async def count_failure(self, mail_id: str) -> int: ...
    def free_bytes(self) -> int: ...

    @property
    def incoming(self) -> Path:
        """Where a mail's bytes go while it arrives, so that keeping it is a move, not a copy."""
        ...


class LocalQueue:
    """The spool on this machine's disk, held by one gateway at a time (a lock file says which)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        self._spool: Spool | None = None
        self._lock: int | None = None
        self._waiting: list[tuple[ReceivedMail, asyncio.Future[str]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.write_failure: SpoolError | None = None  # the last write failed (and none worked since)

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
        orphans = await self._call(Spool.remove_orphans)
        if orphans:
            log.info(
                "removed %d file(s) of mails that never got their 250 (the senders send them again)", orphans
            )
        return await self._call(Spool.recover)

    @property
    def incoming(self) -> Path:
        return self._path / INCOMING

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
        """Every use of the spool, in its thread; whether writes work is remembered for /readyz."""
        assert self._spool is not None, "the queue is not open"
        try:
            result = await self._run(partial(method, self._spool, **kwargs), *args)
        except SpoolError as error:
            if method.__name__ in WRITES:
                self.write_failure = error
            raise
        if method.__name__ in WRITES:
            self.write_failure = None
        return result

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
        return await self._call(Spool.put, mail, None, MailState.PARKED)

    async def claim(self) -> QueuedMail | None:
        return await self._call(Spool.claim)

    async def get(self, mail_id: str) -> QueuedMail | None:
        return await self._call(Spool.get, mail_id, with_content=True)

    async def next_due(self) -> float | None:
        return await self._call(Spool.next_due)

    async def save_request(
        self, mail_id: str, position: int, request: StartEmailContactRequestTypeDef, built_at: float
    ) -> None:
        await self._call(Spool.save_request, mail_id, position, request, built_at)

    async def delivered(
        self, mail_id: str, position: int, contact_id: str | None, thread_ids: Sequence[str]
    ) -> None:
        await self._call(Spool.delivered, mail_id, position, contact_id, thread_ids)

    async def failed(
        self, mail_id: str, position: int, error: DeliveryError, reply: Reply | None = None
    ) -> None:
        await self._call(Spool.failed, mail_id, position, error, reply)

    async def defer(self, mail_id: str, until: float, error: str, *, attempt: bool) -> None:
        await self._call(Spool.defer, mail_id, until, error, attempt=attempt)

    async def release(self, mail_id: str) -> None:
        await self._call(Spool.release, mail_id)

    async def bury(self, mail_id: str, reason: str) -> None:
        await self._call(Spool.bury, mail_id, reason)

    async def finish(self, mail_id: str) -> None:
        await self._call(Spool.finish, mail_id)

    async def set_notice(self, mail_id: str, notice: Notice) -> None:
        await self._call(Spool.set_notice, mail_id, notice)

    async def awaiting_notice(self) -> list[str]:
        return await self._call(Spool.awaiting_notice)

    async def related_contact(self, instance_id: str, message_ids: Sequence[str]) -> str | None:
        return await self._call(Spool.related_contact, instance_id, message_ids)

    async def purge(self) -> None:
        await self._call(Spool.purge)

    async def renew(self, mail_id: str) -> None:
        await self._call(Spool.renew, mail_id)

    async def count_failure(self, mail_id: str) -> int:
        return await self._call(Spool.count_failure, mail_id)

    async def counts(self) -> dict[MailState, int]:
        return await self._call(Spool.counts)

    def writable(self) -> bool:
        return os.access(self._path, os.W_OK)

    def free_bytes(self) -> int:
        assert self._spool is not None
        return self._spool.free_bytes()
