"""Whether each AWS service the shared queue needs answered lately: ``/readyz`` in sqs mode.

Every call of the shared queue's clients (:mod:`.sqs`, :mod:`.dynamodb`, :mod:`.objects`) runs inside
:meth:`Answers.call`, which translates its errors at the one boundary, times it in the metrics and
remembers when the service last answered and when it last failed to. An answer that refuses (a lost
conditional write, a missing object) is still an answer: only transient errors count as failures.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from gateway.aws.boundary import translated
from gateway.errors import DeliveryError
from gateway.observe.metrics import Metrics

__all__ = ["NOT_FOUND", "Answers"]

NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})  # an object that is not there: S3 did answer


class Answers:
    def __init__(self, metrics: Metrics | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._metrics = metrics or Metrics()
        self._clock = clock
        self.last_success: dict[str, float] = {}
        self.last_failure: dict[str, float] = {}
        self.last_error: dict[str, DeliveryError] = {}

    @contextmanager
    def call(self, service: str) -> Iterator[None]:
        """One call to ``service``: its errors leave as :class:`~gateway.errors.DeliveryError`."""
        try:
            with self._metrics.aws_call(service), translated(service):
                yield
        except DeliveryError as error:
            if error.transient and error.code not in NOT_FOUND:
                self.last_failure[service] = self._clock()
                self.last_error[service] = error
            else:
                self.last_success[service] = self._clock()
            raise
        self.last_success[service] = self._clock()

    def silent(self, service: str, within: float) -> bool:
        """No answer from ``service`` for ``within`` seconds (or never)."""
        last = self.last_success.get(service)
        return last is None or self._clock() - last > within

    def failing(self, service: str) -> DeliveryError | None:
        """The error of the last call, when it failed and nothing answered since."""
        failure, success = self.last_failure.get(service), self.last_success.get(service)
        if failure is None or (success is not None and success > failure):
            return None
        return self.last_error.get(service)
