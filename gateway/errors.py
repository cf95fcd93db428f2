"""The gateway's exceptions: each knows the SMTP reply it becomes and whether it can clear.

::

    GatewayError                    .reply: Reply; .transient
    ├── RefusedError                refused at an SMTP command (bad address, relay attempt, size)
    ├── ConfigError                 the configuration file is wrong (raised at start, never sent)
    ├── StartupError                the configuration cannot be put to work here: a port in use, a
    │                               certificate that does not load, a spool it may not write (at start)
    ├── UnreadableError             a mail that cannot be read within its budget (poison): never retried as is
    ├── SpoolError                  4xx: the spool could not be written (raised at the spool's boundary)
    │   └── SpoolFullError          its disk is full: 452 4.3.1, as Postfix says it
    └── DeliveryError               a mail could not become a contact (.service, .code, .message)
        ├── TransientError          4xx: retry later; the retry sends the same request
        │   ├── ThrottledError      Connect or S3 asked us to slow down
        │   ├── UnavailableError    5xx answers, timeouts, network faults
        │   └── MisconfiguredError  403, missing instance, flow or bucket, no credentials: alert the operator,
        │                           never bounce the customer's mail for it
        ├── PermanentError          5xx: the request as built can never succeed
        │   ├── AttachmentsRefusedError  refused for its attachments: it can still go without them
        │   └── ConditionFailedError     a conditional write found another writer first (the shared
        │                                queue's items and objects): never a mail's fate, read it again
        └── DuplicateRequestError   409: this ClientToken already made a contact from another request
                                    (an earlier attempt, with older presigned URLs): delivered, not failed

Third-party errors become these in one place each: botocore and aiohttp at :mod:`gateway.aws.boundary`,
SQLite at the spool's door (:mod:`gateway.delivery.queue`). A :class:`DeliveryError` keeps what AWS said as
fields, so that the log can name it by service and code alone (AWS messages echo personal data) and the
spool can store it as columns.
"""

from __future__ import annotations

import os

from gateway.replies import EARLIER_CONTACT, Replies, Reply

__all__ = [
    "AttachmentsRefusedError",
    "ConditionFailedError",
    "ConfigError",
    "DeliveryError",
    "DuplicateRequestError",
    "GatewayError",
    "MisconfiguredError",
    "PermanentError",
    "RefusedError",
    "SpoolError",
    "SpoolFullError",
    "StartupError",
    "ThrottledError",
    "TransientError",
    "UnavailableError",
    "UnreadableError",
]


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose. ``str()`` is for logs, ``reply`` for clients."""

    default_reply: Reply = Replies.LOCAL_ERROR

    def __init__(self, detail: str, reply: Reply | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.reply = reply or self.default_reply

    @property
    def transient(self) -> bool:
        return self.reply.transient


class RefusedError(GatewayError):
    """An SMTP command refused by policy or syntax; ``reply`` is what the client sees."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply), reply)


class ConfigError(GatewayError):
    """A bad configuration file; the message names the key (``routes[2].match: ...``)."""


class UnreadableError(GatewayError):
    """The mail could not be read (parsed) within its budget of time and memory, or its reading crashed:
    reading it again would end the same way. It becomes a contact saying so, or a dead letter."""


class StartupError(GatewayError):
    """The gateway cannot start as configured; ``key`` names the setting (``smtp.listen``), ``problem``
    says what this machine answered, in words (``127.0.0.1:25: address already in use``)."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem

    @staticmethod
    def reason(error: OSError) -> str:
        """``address already in use``: the system's words for an OSError, without Python's decoration."""
        return os.strerror(error.errno).lower() if error.errno else str(error)


class SpoolError(GatewayError):
    """The spool could not be read or written; it can clear (a locked or busy database, a disk problem)."""

    default_reply = Replies.LOCAL_ERROR


class SpoolFullError(SpoolError):
    """The spool's disk is full: new mail waits with its sender until there is room."""

    default_reply = Replies.NO_ROOM


class DeliveryError(GatewayError):
    """A mail (or one of its recipients) could not become a contact.

    ``service`` (``connect``, ``s3``) and ``code`` (AWS's error code, or the kind of fault) say what went
    wrong without personal data; ``message`` is the whole text, which may echo request values.
    """

    def __init__(
        self, message: str, reply: Reply | None = None, *, service: str = "", code: str = ""
    ) -> None:
        super().__init__(message, reply)
        self.message = message
        self.service = service
        self.code = code

    @property
    def summary(self) -> str:
        """``connect: InvalidRequestException``: what the log may say of it without personal data."""
        return ": ".join(part for part in (self.service, self.code) if part) or type(self).__name__

    def __str__(self) -> str:
        return ": ".join(part for part in (self.service, self.code, self.message) if part)


class TransientError(DeliveryError):
    default_reply = Replies.UNAVAILABLE


class ThrottledError(TransientError):
    default_reply = Replies.THROTTLED


class UnavailableError(TransientError):
    default_reply = Replies.UNAVAILABLE


class MisconfiguredError(TransientError):
    """The operator must act (IAM policy, instance id, bucket); the mail waits meanwhile."""

    default_reply = Replies.MISCONFIGURED


class PermanentError(DeliveryError):
    default_reply = Replies.REFUSED_BY_CONNECT


class AttachmentsRefusedError(PermanentError):
    """Connect refused the attachments themselves (size, type, count); ``reason`` is its Reason code."""

    def __init__(self, message: str, reason: str, *, service: str = "", code: str = "") -> None:
        super().__init__(message, service=service, code=code)
        self.reason = reason


class ConditionFailedError(PermanentError):
    """DynamoDB's ConditionalCheckFailedException or S3's 412: someone wrote first. ``item`` is what DynamoDB
    returned of the item as it is (``ReturnValuesOnConditionCheckFailure``), when it did."""

    def __init__(
        self, message: str, item: dict[str, object] | None = None, *, service: str = "", code: str = ""
    ) -> None:
        super().__init__(message, service=service, code=code)
        self.item = item


class DuplicateRequestError(DeliveryError):
    """Connect's 409 IdempotencyException: the contact for this mail and destination already exists."""

    default_reply = Replies.DELIVERED.format(contacts=EARLIER_CONTACT)
