"""The token bucket toward Connect, on a virtual clock."""

from __future__ import annotations

import asyncio

import pytest

from gateway.delivery.governor import DECREASE_HOLD_SECONDS, MIN_FRACTION, RECOVERY_SECONDS, Governor
from gateway.delivery.workers import backoff

from ..helpers import Clock


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


def worst_excess(times: list[float], rate: float, burst: int) -> float:
    """The most calls any window held beyond ``burst + rate * window``."""
    excess = 0.0
    for i, start in enumerate(times):
        for j in range(i, len(times)):
            excess = max(excess, (j - i + 1) - (burst + rate * (times[j] - start)))
    return excess


async def test_no_window_holds_more_than_burst_plus_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Twenty workers asking at once, with throttling now and then: over any stretch of t virtual seconds,
    at most burst + rate * t calls go out."""
    clock = Clock()
    granted: list[float] = []

    async def virtual_sleep(seconds: float) -> None:
        clock.now += seconds
        await real_sleep(0)

    real_sleep = asyncio.sleep
    monkeypatch.setattr(asyncio, "sleep", virtual_sleep)
    governor = Governor(12.0, 4, clock=clock)

    async def worker(number: int) -> None:
        for call in range(15):
            await governor.acquire()
            granted.append(clock.now)
            if (number + call) % 37 == 0:
                governor.throttled()

    await asyncio.gather(*(worker(n) for n in range(20)))
    assert len(granted) == 300
    assert worst_excess(granted, 12.0, 4) <= 1e-9
    assert clock.now > (300 - 4) / 12.0  # the throttling slowed it below the configured rate


def test_backoff_doubles_with_jitter_within_bounds() -> None:
    assert backoff(0, 30, 3600, jitter=lambda: 0.0) == 15
    assert backoff(0, 30, 3600, jitter=lambda: 1.0) == 30
    assert backoff(3, 30, 3600, jitter=lambda: 1.0) == 240
    assert backoff(20, 30, 3600, jitter=lambda: 1.0) == 3600


async def test_each_connect_quota_has_its_own_governor() -> None:
    """Quotas are per account and region: throttling in one halves that one alone; each gets its
    ``[[quotas]]`` entry's limits, else ``[queue]``'s, and the metrics say so per region."""
    from gateway.aws.placement import Quota
    from gateway.delivery.governor import Governors
    from gateway.observe.metrics import Metrics
    from gateway.settings import QueueSettings, QuotaSettings

    clock, metrics = Clock(), Metrics()
    governors = Governors(
        QueueSettings(rate_per_second=2.0, burst=5),
        (QuotaSettings("eu-west-2", rate_per_second=8.0, burst=10),),
        metrics,
        clock=clock,
    )
    busy, quiet = Quota("", "eu-west-2"), Quota("", "us-east-1")
    assert governors(busy) is governors(busy)
    assert (governors(busy).governor.rate, governors(busy).governor.burst) == (8.0, 10)
    assert (governors(quiet).governor.rate, governors(quiet).governor.burst) == (2.0, 5)
    governors(busy).throttled()
    assert governors(busy).governor.rate == 4.0
    assert governors(quiet).governor.rate == 2.0
    sample = metrics.registry.get_sample_value
    assert sample("mail_gateway_connect_rate", {"region": "eu-west-2", "account": ""}) == 4.0
    assert sample("mail_gateway_connect_rate", {"region": "us-east-1", "account": ""}) == 2.0
    assert sample("mail_gateway_connect_throttled_total", {"region": "eu-west-2", "account": ""}) == 1
    # A reload that changes a quota's limits starts its governor again from them; the others keep theirs.
    governors.update(QueueSettings(rate_per_second=2.0, burst=5), (QuotaSettings("eu-west-2", None, 6.0, 6),))
    assert governors(busy).governor.rate == 6.0
    assert governors(quiet).governor.rate == 2.0


async def test_a_long_wait_is_known_before_waiting() -> None:
    clock = Clock()
    governor = Governor(2.0, 2, clock=clock)
    assert governor.wait() == 0.0
    await governor.acquire()
    await governor.acquire()
    assert governor.wait() == pytest.approx(0.5)  # the next token comes in half a second
    governor.throttled()
    assert governor.wait() == pytest.approx(1.0)  # at half the rate
