"""One governor toward Connect: a token bucket that slows down when Connect throttles.

Connect's default quota for StartEmailContact is 2 requests per second per account, burst 5. The bucket
holds ``burst`` tokens and refills at the current rate, so over any stretch of ``t`` seconds at most
``burst + rate·t`` calls go out. A ThrottlingException halves the rate (at most once a second, never
below a tenth of the configured one) and empties the bucket; every ``RECOVERY_SECONDS`` without throttling
the rate climbs back by a tenth of the configured rate, gently, as TCP's congestion control does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["Governor"]

MIN_FRACTION = 0.1
RECOVERY_SECONDS = 5.0
RECOVERY_STEP = 0.1
DECREASE_HOLD_SECONDS = 1.0
TOKEN_EPSILON = 1e-9
MIN_WAIT_SECONDS = 0.001  # never a sleep too short to move the clock: that would spin


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

    async def acquire(self) -> None:
        """Wait for a token; callers are served in arrival order."""
        async with self._lock:
            while True:
                self._refill()
                if self._tokens >= 1 - TOKEN_EPSILON:  # refills add up in floating point: 0.999...
                    self._tokens -= 1
                    return
                await asyncio.sleep(max(MIN_WAIT_SECONDS, (1 - self._tokens) / self.rate))

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

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self.rate < self.configured_rate and now - self._last_change >= RECOVERY_SECONDS:
            self.rate = min(self.configured_rate, self.rate + self.configured_rate * RECOVERY_STEP)
            self._last_change = now
