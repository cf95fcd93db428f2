"""One long poll per gateway, handing messages to the workers that wait for one.

Each idle worker polling SQS on its own would multiply the requests (and the cost) by the number of
workers. Here a worker waiting in :meth:`Receiver.next` registers; while anyone waits, one long poll asks
for as many messages as there are waiters (at most ten) and hands them out. A message that arrives just
after its waiter gave up is kept for the next one: it is invisible to the other gateways meanwhile, and
:meth:`Receiver.close` makes whatever is still held visible again at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from gateway.aws.sqs import Received, WorkQueue
from gateway.errors import DeliveryError

__all__ = ["Receiver"]

log = logging.getLogger(__name__)

# A long poll's wait. A stopping gateway waits for the one under way (whatever it brings is made visible
# again at once, where a cancelled one would leave its messages invisible for a visibility timeout).
POLL_SECONDS = 2
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)  # after a failed poll (SQS unreachable): waits that grow


class Receiver:
    def __init__(self, queue: WorkQueue, visibility: int, poll_seconds: int = POLL_SECONDS) -> None:
        self._queue = queue
        self._visibility = visibility
        self._poll_seconds = poll_seconds
        self._waiters: deque[asyncio.Future[Received]] = deque()
        self._held: deque[Received] = deque()
        self._poller: asyncio.Task[None] | None = None
        self._closed = False

    async def next(self, within: float) -> Received | None:
        """A message, or None when none came ``within`` seconds."""
        if self._held:
            return self._held.popleft()
        if self._closed:
            return None
        waiter: asyncio.Future[Received] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll(), name="sqs-receiver")
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), within)
        except TimeoutError:
            if waiter.done():  # handed a message as the wait ran out
                return waiter.result()
            waiter.cancel()
            return None
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    async def _poll(self) -> None:
        failures = 0
        while self._waiters and not self._closed:
            waiting = sum(1 for waiter in self._waiters if not waiter.done())
            try:
                messages = await self._queue.receive(waiting, self._poll_seconds, self._visibility)
            except DeliveryError as error:
                log.warning("could not receive from the queue: %s", error.summary)
                await asyncio.sleep(RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])
                failures += 1
                continue
            failures = 0
            for message in messages:
                self._hand(message)

    def _hand(self, message: Received) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(message)
                return
        self._held.append(message)

    async def close(self) -> None:
        """No more polls; the one under way ends, and every message held becomes visible again."""
        self._closed = True
        for waiter in self._waiters:
            waiter.cancel()
        if self._poller is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._poller, self._poll_seconds + 5)
        while self._held:
            message = self._held.popleft()
            with contextlib.suppress(DeliveryError):
                await self._queue.hide(message.receipt, 0)
