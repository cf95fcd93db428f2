"""Governors toward Connect: token buckets that slow down when Connect throttles, one per quota.

Connect's default quota for StartEmailContact is 2 requests per second per account, burst 5. The bucket
holds ``burst`` tokens and refills at the current rate, so over any stretch of ``t`` seconds at most
``burst + rate·t`` calls go out. A ThrottlingException halves the rate (at most once a second, never
below a tenth of the configured one) and empties the bucket; every ``RECOVERY_SECONDS`` without throttling
the rate climbs back by a tenth of the configured rate, gently, as TCP's congestion control does.

The quota is per account and per region, so :class:`Governors` keeps one governor for each
:class:`~gateway.aws.placement.Quota` the routes use, with the rate and burst of its ``[[quotas]]`` entry
(else ``[queue]``'s): a busy region that is throttled slows down alone. A governor is a :class:`Budget`:
this process's own :class:`Governor` (spool mode), or in sqs mode a bucket every gateway shares
(:class:`~gateway.delivery.shared.pacer.SharedPacer`, one DynamoDB item per quota).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

from gateway.aws.placement import Quota, quota_settings
from gateway.observe.metrics import Metrics
from gateway.settings import QueueSettings, QuotaSettings

__all__ = ["Budget", "BudgetFactory", "Governor", "Governors"]

MIN_FRACTION = 0.1
RECOVERY_SECONDS = 5.0
RECOVERY_STEP = 0.1
DECREASE_HOLD_SECONDS = 1.0
TOKEN_EPSILON = 1e-9
MIN_WAIT_SECONDS = 0.001  # never a sleep too short to move the clock: that would spin


class Budget(Protocol):
    """The pacer of one Connect quota, as the workers use it (a
    :class:`~gateway.delivery.deliverer.Pacer` that also says how long callers wait)."""

    @property
    def configured_rate(self) -> float: ...

    @property
    def rate(self) -> float: ...

    @property
    def burst(self) -> int: ...

    @property
    def interval(self) -> float: ...

    async def acquire(self) -> None: ...

    def throttled(self) -> None: ...

    def wait(self) -> float: ...

    async def close(self) -> None: ...


BudgetFactory = Callable[[Quota, float, int], Budget]  # a quota, its rate and burst: its budget


class Governor:
    def __init__(
        self, rate_per_second: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.configured_rate = rate_per_second
        self.rate = rate_per_second
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()
        self._last_change = self._updated
        self._last_decrease = -DECREASE_HOLD_SECONDS
        self._lock = asyncio.Lock()
        self._waiting = 0

    async def acquire(self) -> None:
        """Wait for a token; callers are served in arrival order."""
        self._waiting += 1
        try:
            async with self._lock:
                while True:
                    self._refill()
                    if self._tokens >= 1 - TOKEN_EPSILON:  # refills add up in floating point: 0.999...
                        self._tokens -= 1
                        return
                    await asyncio.sleep(max(MIN_WAIT_SECONDS, (1 - self._tokens) / self.rate))
        finally:
            self._waiting -= 1

    def wait(self) -> float:
        """About how long a caller arriving now would wait for its token, behind those waiting already:
        a worker facing a long wait does other work (another region's mail) instead."""
        self._refill()
        return max(0.0, (self._waiting + 1 - self._tokens) / self.rate)

    def throttled(self) -> None:
        """Connect said ThrottlingException: slow down at once (once per second: calls already under
        way when the first refusal came are not news)."""
        self._refill()
        now = self._clock()
        if now - self._last_decrease < DECREASE_HOLD_SECONDS:
            return
        self.rate = max(self.configured_rate * MIN_FRACTION, self.rate / 2)
        self._tokens = min(self._tokens, 0.0)
        self._last_change = self._last_decrease = now

    @property
    def interval(self) -> float:
        """Seconds between calls at the current rate."""
        return 1 / self.rate

    async def close(self) -> None:
        """A bucket in this process has nothing under way to wait for."""

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self.rate < self.configured_rate and now - self._last_change >= RECOVERY_SECONDS:
            self.rate = min(self.configured_rate, self.rate + self.configured_rate * RECOVERY_STEP)
            self._last_change = now


class Governors:
    """``governors(quota)``: the governor of one Connect quota, made when first asked for. Its rate and
    burst are the quota's ``[[quotas]]`` entry's, else ``[queue]``'s; its current rate and throttling
    are in the metrics, labelled by region and account. ``budget`` makes each (default: a
    :class:`Governor` in this process)."""

    def __init__(
        self,
        queue: QueueSettings,
        quotas: tuple[QuotaSettings, ...] = (),
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        budget: BudgetFactory | None = None,
    ) -> None:
        self._queue = queue
        self._quotas = quotas
        self._metrics = metrics or Metrics()
        self._clock = clock
        self._budget = budget or self._local
        self._governors: dict[Quota, _Watched] = {}
        self._made: list[Budget] = []  # every one, replaced ones too: closed at the end

    def _local(self, quota: Quota, rate: float, burst: int) -> Governor:
        return Governor(rate, burst, self._clock)

    def __call__(self, quota: Quota) -> _Watched:
        found = self._governors.get(quota)
        if found is None:
            rate, burst = self._limits(quota)
            made = self._budget(quota, rate, burst)
            self._made.append(made)
            found = self._governors[quota] = _Watched(made, quota, self._metrics)
        return found

    def _limits(self, quota: Quota) -> tuple[float, int]:
        entry = quota_settings(quota, self._quotas)
        if entry is None:
            return self._queue.rate_per_second, self._queue.burst
        return entry.rate_per_second, entry.burst

    def update(self, queue: QueueSettings, quotas: tuple[QuotaSettings, ...]) -> None:
        """A new configuration: governors whose limits changed start again from the new ones."""
        self._queue, self._quotas = queue, quotas
        for quota, watched in list(self._governors.items()):
            rate, burst = self._limits(quota)
            if (rate, burst) != (watched.governor.configured_rate, watched.governor.burst):
                del self._governors[quota]

    @property
    def quotas(self) -> dict[Quota, Budget]:
        return {quota: watched.governor for quota, watched in self._governors.items()}

    async def close(self) -> None:
        """Let every budget finish what it has under way (a shared one lowering its rate)."""
        made, self._made = self._made, []
        for budget in made:
            await budget.close()


class _Watched:
    """A governor whose rate and throttling are kept in the metrics."""

    def __init__(self, governor: Budget, quota: Quota, metrics: Metrics) -> None:
        self.governor = governor
        self._rate = metrics.connect_rate.labels(quota.region, quota.account)
        self._throttled = metrics.connect_throttled.labels(quota.region, quota.account)
        self._rate.set(governor.rate)

    async def acquire(self) -> None:
        await self.governor.acquire()
        self._rate.set(self.governor.rate)

    def throttled(self) -> None:
        self._throttled.inc()
        self.governor.throttled()
        self._rate.set(self.governor.rate)

    @property
    def interval(self) -> float:
        return self.governor.interval

    def wait(self) -> float:
        return self.governor.wait()
