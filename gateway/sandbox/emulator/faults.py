"""Faults the emulator injects on purpose, so that retries, back-off and idempotency can be seen working.

``error_rate`` answers that share of calls with a 500 InternalServiceException; half of those happen after
the contact was created (the answer is lost on the way, the nastiest case for a client, which only its
ClientToken saves from a duplicate). ``throttle_rps`` answers ThrottlingException (429) to calls beyond that
many per second, measured as AWS measures: a token bucket holding one second's worth of calls, refilled at
that rate (refused calls take no token), in ``throttle_region`` only when one is named (the quota is per
region: calls signed for other regions are never throttled); ``latency_ms`` delays every answer;
``s3_error_rate`` makes the embedded S3 answer 503 SlowDown. Set at start (``mail-gateway emulate
--error-rate 0.3``) or live (``PUT /_emulator/faults``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from gateway.sandbox.emulator.connect import Answer

__all__ = ["Fault", "FaultInjector", "Faults"]

LOST_ANSWER_SHARE = 0.5

_BOUNDS = {
    "error_rate": (float, 0.0, 1.0),
    "throttle_rps": (float, 0.0, 1e9),
    "latency_ms": (int, 0, 600_000),
    "s3_error_rate": (float, 0.0, 1.0),
}


@dataclass(frozen=True)
class Faults:
    error_rate: float = 0.0
    throttle_rps: float = 0.0  # 0: no throttling
    latency_ms: int = 0
    s3_error_rate: float = 0.0
    throttle_region: str = ""  # "": every region

    @classmethod
    def from_json(cls, document: Mapping[str, Any], base: Faults | None = None) -> Faults:
        """The faults a JSON body asks for (absent keys keep ``base``); ValueError names a bad key."""
        unknown = set(document) - set(_BOUNDS) - {"throttle_region"}
        if unknown:
            known = ", ".join((*_BOUNDS, "throttle_region"))
            raise ValueError(f"unknown key {sorted(unknown)[0]!r}; known: {known}")
        changes: dict[str, Any] = {}
        for key, value in document.items():
            if key == "throttle_region":
                if not isinstance(value, str):
                    raise ValueError("throttle_region must be a region such as eu-west-2, or empty")
                changes[key] = value
                continue
            kind, low, high = _BOUNDS[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
                raise ValueError(f"{key} must be a number from {low:g} to {high:g}")
            changes[key] = kind(value)
        return replace(base or cls(), **changes)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Fault:
    answer: Answer
    after_processing: bool = False  # the service did the work, then the answer was lost


class FaultInjector:
    def __init__(
        self,
        faults: Faults | None = None,
        *,
        random_source: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.faults = faults or Faults()
        self._random = random_source
        self._clock = clock
        self._tokens: float | None = None  # filled with one second's calls when throttling is first needed
        self._updated = clock()

    def fault(self, region: str | None = None) -> Fault | None:
        """The fault for this call (signed for ``region``), or None to let it through."""
        faults = self.faults
        throttled_here = not faults.throttle_region or faults.throttle_region == region
        if faults.throttle_rps and throttled_here and not self._take_token(faults.throttle_rps):
            return Fault(
                Answer.failure(429, "ThrottlingException", "Rate exceeded (injected by the emulator)")
            )
        if faults.error_rate and self._random() < faults.error_rate:
            answer = Answer.failure(
                500, "InternalServiceException", "Internal failure (injected by the emulator)"
            )
            return Fault(answer, after_processing=self._random() < LOST_ANSWER_SHARE)
        return None

    def _take_token(self, rate: float) -> bool:
        now = self._clock()
        capacity = max(1.0, rate)
        if self._tokens is None:
            self._tokens = min(capacity, rate)
        self._tokens = min(capacity, self._tokens + (now - self._updated) * rate)
        self._updated = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True
