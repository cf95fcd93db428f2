"""What an operator watches: Prometheus metrics, one registry per gateway (so tests can run several).

Counters for the front door (sessions, mails received, accepted and refused by reason), for delivery
(contacts, attachments and bytes uploaded, retries, dead letters, notifications), the queue depth by
state, the verdicts of the sender checks and engines, latency histograms of S3 and Connect calls and of
the whole delivery, and an alert-worthy gauge ``mail_gateway_configuration_fault`` (1 while AWS answers
403 or a missing instance, bucket or flow).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from gateway.errors import DeliveryError, MisconfiguredError

__all__ = ["Metrics"]

_CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_DELIVERY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 86400)


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.sessions = Counter("mail_gateway_sessions", "SMTP connections", registry=registry)
        self.received = Counter(
            "mail_gateway_mails_received", "Mails whose DATA was received", registry=registry
        )
        self.accepted = Counter("mail_gateway_mails_accepted", "Mails answered 250", registry=registry)
        self.refused = Counter(
            "mail_gateway_mails_refused",
            "SMTP refusals (4xx and 5xx) by reason",
            ["reason"],
            registry=registry,
        )
        self.contacts = Counter(
            "mail_gateway_contacts_created", "Connect contacts created", registry=registry
        )
        self.attachments = Counter(
            "mail_gateway_attachments_uploaded", "Attachments uploaded to S3", registry=registry
        )
        self.attachment_bytes = Counter(
            "mail_gateway_attachment_bytes_uploaded", "Bytes of attachments uploaded to S3", registry=registry
        )
        self.retries = Counter(
            "mail_gateway_delivery_retries", "Deliveries deferred for a retry", registry=registry
        )
        self.dead_letters = Counter(
            "mail_gateway_dead_letters", "Mails moved to the dead-letter area", registry=registry
        )
        self.worker_errors = Counter(
            "mail_gateway_worker_errors",
            "Errors a delivery worker survived (a spool it could not write, an unexpected exception)",
            registry=registry,
        )
        self.unreadable = Counter(
            "mail_gateway_unreadable_mails",
            "Mails that could not be read within their budget (poison): a contact saying so, or dead",
            registry=registry,
        )
        self.notifications = Counter(
            "mail_gateway_notifications",
            "Delivery status notifications to senders, by outcome (sent, failed, unsent)",
            ["outcome"],
            registry=registry,
        )
        self.verdicts = Counter(
            "mail_gateway_verdicts",
            "Sender authentication, spam and virus verdicts by check (spf, dkim, dmarc, arc, spam, virus) "
            "and result, and what they decided (check=decision: the refusal's name, or tagged)",
            ["check", "result"],
            registry=registry,
        )
        self.queue = Gauge(
            "mail_gateway_queue_mails", "Mails in the spool by state", ["state"], registry=registry
        )
        self.aws_calls = Histogram(
            "mail_gateway_aws_call_seconds",
            "Latency of S3 and Connect calls",
            ["service", "outcome"],
            buckets=_CALL_BUCKETS,
            registry=registry,
        )
        self.delivery = Histogram(
            "mail_gateway_delivery_seconds",
            "From acceptance to the contact, for each mail delivered",
            buckets=_DELIVERY_BUCKETS,
            registry=registry,
        )
        self.configuration_fault = Gauge(
            "mail_gateway_configuration_fault",
            "1 while AWS answers that the configuration is wrong (403, missing instance, bucket or flow)",
            ["service"],
            registry=registry,
        )
        for service in ("connect", "s3"):
            self.configuration_fault.labels(service).set(0)
        self.last_aws_success: float | None = None
        self.last_aws_failure: float | None = None

    @contextmanager
    def aws_call(self, service: str) -> Iterator[None]:
        """Time one AWS call, and keep the configuration-fault gauge and reachability up to date."""
        started = time.perf_counter()
        outcome = "ok"
        try:
            yield
        except DeliveryError as error:
            outcome = type(error).__name__
            if isinstance(error, MisconfiguredError):
                self.configuration_fault.labels(service).set(1)
            if error.transient:
                self.last_aws_failure = time.monotonic()
            raise
        finally:
            self.aws_calls.labels(service, outcome).observe(time.perf_counter() - started)
        self.configuration_fault.labels(service).set(0)
        self.last_aws_success = time.monotonic()

    def set_queue(self, counts: Mapping[str, int]) -> None:
        for state, count in counts.items():
            self.queue.labels(state).set(count)

    def exposition(self) -> bytes:
        return bytes(generate_latest(self.registry))
