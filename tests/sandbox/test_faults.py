"""The emulator's fault injector, deterministic."""

from __future__ import annotations

import pytest

from gateway.sandbox.emulator.faults import FaultInjector, Faults

from ..helpers import Clock


def test_throttling_is_a_token_bucket_of_one_seconds_calls() -> None:
    clock = Clock()
    injector = FaultInjector(Faults(throttle_rps=3), clock=clock)
    answers = [injector.fault() for _ in range(5)]
    assert [a is None for a in answers] == [True, True, True, False, False]
    assert answers[3] is not None and answers[3].answer.error == "ThrottlingException"
    clock.now = 1 / 3  # one token back
    assert [injector.fault() is None for _ in range(2)] == [True, False]
    clock.now = 10.0  # never more than one second's worth
    assert [injector.fault() is None for _ in range(4)] == [True, True, True, False]


def test_errors_at_the_given_rate_half_after_processing() -> None:
    draws = iter([0.1, 0.2, 0.1, 0.9, 0.9])
    injector = FaultInjector(Faults(error_rate=0.5), random_source=lambda: next(draws))
    first, second, third = injector.fault(), injector.fault(), injector.fault()
    assert first is not None and first.answer.status == 500 and first.after_processing
    assert second is not None and not second.after_processing
    assert third is None


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"error_rate": 2}, "error_rate must be a number from 0 to 1"),
        ({"latency_ms": -1}, "latency_ms must be"),
        ({"error_rate": True}, "error_rate must be"),
        ({"typo": 1}, "unknown key 'typo'"),
    ],
)
def test_bad_fault_settings_are_refused(document: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Faults.from_json(document)


def test_partial_updates_keep_the_rest() -> None:
    faults = Faults.from_json({"error_rate": 0.3, "throttle_rps": 5, "latency_ms": 50})
    assert Faults.from_json({"latency_ms": 0}, faults) == Faults(
        error_rate=0.3, throttle_rps=5.0, latency_ms=0
    )
