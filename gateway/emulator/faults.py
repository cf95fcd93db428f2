"""Faults the emulator injects on purpose, so that retries and back-off can be seen working.

``error_rate`` answers that share of calls with a 500 InternalServiceException; ``throttle_rps`` answers
ThrottlingException (429) to calls beyond that many per second; ``latency_ms`` delays every answer. Set at
start (``mail-gateway emulate --error-rate 0.3``) or live (``PUT /_emulator/faults``).
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from gateway.emulator.connect import Answer

__all__ = ["FaultInjector", "Faults"]


@dataclass(frozen=True)
class Faults:
    error_rate: float = 0.0
    throttle_rps: float = 0.0  # 0: no throttling
    latency_ms: int = 0

    @classmethod
    def from_json(cls, document: Mapping[str, Any], base: Faults | None = None) -> Faults:
        """The faults a JSON body asks for (absent keys keep ``base``); ValueError names a bad key."""
        changes: dict[str, Any] = {}
        for key, kind, low, high in (
            ("error_rate", float, 0.0, 1.0),
            ("throttle_rps", float, 0.0, 1e9),
            ("latency_ms", int, 0, 600_000),
        ):
            if key not in document:
                continue
            value = document[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
                raise ValueError(f"{key} must be a number from {low:g} to {high:g}")
            changes[key] = kind(value)
        unknown = set(document) - {"error_rate", "throttle_rps", "latency_ms"}
        if unknown:
            raise ValueError(f"unknown key {sorted(unknown)[0]!r}")
        return replace(base or cls(), **changes)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


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
        self._recent: deque[float] = deque()

    def refusal(self) -> Answer | None:
        """The fault for this call, or None to let it through. Every call counts toward the rate."""
        now = self._clock()
        while self._recent and now - self._recent[0] >= 1.0:
            self._recent.popleft()
        self._recent.append(now)
        faults = self.faults
        if faults.throttle_rps and len(self._recent) > faults.throttle_rps:
            return Answer.failure(429, "ThrottlingException", "Rate exceeded (injected by the emulator)")
        if faults.error_rate and self._random() < faults.error_rate:
            return Answer.failure(
                500, "InternalServiceException", "Internal failure (injected by the emulator)"
            )
        return None
