"""One budget toward Connect for every gateway: a token bucket kept in one DynamoDB item.

Connect's StartEmailContact quota is per account and region, not per gateway: N gateways each pacing
themselves at ``rate_per_second`` would send N times too much and live on throttling. So the bucket is
shared, as a GCRA (the generic cell rate algorithm, a token bucket told by one number): the item holds the
theoretical arrival time ``tat``; a call may go when ``tat - now <= (burst - 1) · interval`` and moves it on
by one interval. Each permit is one conditional write, a compare-and-set on the ``tat`` read (a lost race
returns the item as it is, through ``ReturnValuesOnConditionCheckFailure``, so no extra read is needed).

ThrottlingException still halves the rate, for every gateway: the item's ``rate`` and ``changed_at`` are
set (at most once a second, the same hold as :class:`~gateway.delivery.governor.Governor`'s) and the
bucket emptied; each gateway computes the recovery from them (a tenth of the configured rate every
``RECOVERY_SECONDS`` without throttling), so recovering needs no write. Clocks must agree (NTP): skew moves
capacity between gateways, it does not add any.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from gateway.aws.dynamodb import Table, condition_failed
from gateway.delivery.governor import DECREASE_HOLD_SECONDS, MIN_FRACTION, RECOVERY_SECONDS, RECOVERY_STEP
from gateway.errors import ConditionFailedError, DeliveryError

__all__ = ["SharedPacer"]

log = logging.getLogger(__name__)

MIN_WAIT_SECONDS = 0.005
FALLBACK_SECONDS = 1.0  # DynamoDB unreachable: wait this long, then try again (never call Connect unpaced)


class SharedPacer:
    """A :class:`~gateway.delivery.deliverer.Pacer` whose bucket lives in ``table`` under ``key``."""

    def __init__(
        self,
        table: Table,
        rate_per_second: float,
        burst: int,
        key: str = "pacer#connect",
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.configured_rate = rate_per_second
        self.burst = burst
        self._table = table
        self._key = key
        self._clock = clock
        self._sleep = sleep
        self._seen: dict[str, Any] = {}  # the item as last read or written
        self._lock = asyncio.Lock()
        self._slowing: set[asyncio.Task[None]] = set()
        self.permits = 0  # how many this gateway took (for tests and the benchmark)

    def _rate(self, item: dict[str, Any], now: float) -> float:
        """The shared rate now: the item's, recovered since it was last lowered, never above configured."""
        rate = float(item.get("rate", self.configured_rate))
        changed = float(item.get("changed_at", 0.0))
        steps = max(0.0, now - changed) // RECOVERY_SECONDS
        return min(self.configured_rate, rate + steps * self.configured_rate * RECOVERY_STEP)

    @property
    def rate(self) -> float:
        return self._rate(self._seen, self._clock())

    @property
    def interval(self) -> float:
        """Seconds between calls at the current shared rate."""
        return 1 / self.rate

    async def acquire(self) -> None:
        """Wait for a permit; this gateway's callers queue in arrival order, gateways race fairly."""
        async with self._lock:
            while True:
                try:
                    wait = await self._try()
                except DeliveryError as error:
                    log.warning("the shared budget could not be read (%s): waiting", error.summary)
                    wait = FALLBACK_SECONDS
                if wait is None:
                    self.permits += 1
                    return
                await self._sleep(max(MIN_WAIT_SECONDS, wait) * (1 + 0.1 * random.random()))  # noqa: S311

    async def _try(self) -> float | None:
        """Take a permit (None), or the seconds to wait before the bucket may have one."""
        now = self._clock()
        interval = 1 / self._rate(self._seen, now)
        tolerance = interval * (self.burst - 1)
        tat = self._seen.get("tat")
        if tat is None or float(tat) <= now:  # an idle bucket: full
            condition = "attribute_not_exists(#tat) OR #tat <= :now"
            values: dict[str, Any] = {"now": now}
            start = now
        elif float(tat) - now <= tolerance:  # within the burst: take the next slot after the one seen
            condition, values, start = "#tat = :seen", {"seen": float(tat)}, float(tat)
        else:
            self._seen = await self._table.get(self._key) or {}  # our view may be old: look before waiting
            tat = self._seen.get("tat")
            if tat is None or float(tat) - self._clock() <= tolerance:
                return 0.0
            return float(tat) - tolerance - self._clock()
        try:
            self._seen = await self._table.update(
                self._key, assign={"tat": start + interval}, condition=condition, **values
            )
        except ConditionFailedError as lost:
            self._seen = condition_failed(lost) or await self._table.get(self._key) or {}
            return 0.0  # look again at once, with the item as it is
        return None

    def throttled(self) -> None:
        """Connect said ThrottlingException: halve the shared rate (in the background: the caller is a
        delivery that goes on to defer its mail)."""
        task = asyncio.get_running_loop().create_task(self._halve())
        self._slowing.add(task)
        task.add_done_callback(self._slowing.discard)

    async def _halve(self) -> None:
        for _ in range(3):  # a lost race means someone else changed it: look at it once more
            now = self._clock()
            seen = self._seen
            changed = float(seen.get("changed_at", 0.0))
            if now - changed < DECREASE_HOLD_SECONDS:
                return  # calls already under way when the first refusal came are not news
            rate = max(self.configured_rate * MIN_FRACTION, self._rate(seen, now) / 2)
            tolerance = (self.burst - 1) / rate
            emptied = max(float(seen.get("tat") or now), now + tolerance)
            condition = "attribute_not_exists(#changed_at) OR #changed_at = :changed"
            try:
                self._seen = await self._table.update(
                    self._key,
                    assign={"rate": rate, "changed_at": now, "tat": emptied},
                    condition=condition,
                    changed=changed,
                )
                log.info("Connect throttled: the shared rate is now %.2f/s", rate)
                return
            except ConditionFailedError as lost:
                self._seen = condition_failed(lost) or {}
            except DeliveryError as error:
                log.warning("could not lower the shared rate: %s", error.summary)
                return

    async def close(self) -> None:
        for task in list(self._slowing):
            with contextlib.suppress(BaseException):
                await task
