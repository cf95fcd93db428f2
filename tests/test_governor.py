"""The token bucket toward Connect, on a virtual clock."""

from __future__ import annotations

import asyncio

import pytest

from gateway.delivery.governor import DECREASE_HOLD_SECONDS, MIN_FRACTION, RECOVERY_SECONDS, Governor
from gateway.delivery.workers import backoff

from .helpers import Clock


async def test_burst_then_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += seconds

    governor = Governor(2.0, 5, clock=clock)
    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    for _ in range(5):
        await governor.acquire()
    assert slept == []  # the burst goes at once
    for _ in range(4):
        await governor.acquire()
    assert clock.now == pytest.approx(2.0)  # then two per second


async def test_throttling_halves_the_rate_and_it_recovers_gently() -> None:
    clock = Clock()
    governor = Governor(10.0, 5, clock=clock)
    governor.throttled()
    governor.throttled()  # the same burst of refusals: one decrease
    assert governor.rate == 5.0
    for _ in range(10):
        clock.now += DECREASE_HOLD_SECONDS
        governor.throttled()
    assert governor.rate == pytest.approx(10.0 * MIN_FRACTION)
    clock.now += RECOVERY_SECONDS
    await governor.acquire()
    assert governor.rate == pytest.approx(2.0)  # one step of a tenth of the configured rate
    for _ in range(20):
        clock.now += RECOVERY_SECONDS
        governor._refill()
    assert governor.rate == 10.0


def test_backoff_doubles_with_jitter_within_bounds() -> None:
    assert backoff(0, 30, 3600, jitter=lambda: 0.0) == 15
    assert backoff(0, 30, 3600, jitter=lambda: 1.0) == 30
    assert backoff(3, 30, 3600, jitter=lambda: 1.0) == 240
    assert backoff(20, 30, 3600, jitter=lambda: 1.0) == 3600
