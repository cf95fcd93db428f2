"""The one boundary where botocore and network errors become the gateway's own (:mod:`gateway.errors`).

The classification is the heart of "never lose a mail": anything that can clear (throttling, 5xx, timeouts,
a missing instance, queue or table, an IAM policy an operator will fix) is transient, so the mail waits and
is retried; only what can never succeed for the request as built (an invalid request, an attachment Connect
refuses) is permanent. A conditional write that lost (DynamoDB's ConditionalCheckFailedException, S3's 412)
is its own kind, :class:`~gateway.errors.ConditionFailedError`, carrying the item as DynamoDB returned it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
)

from gateway.errors import (
    AttachmentsRefusedError,
    ConditionFailedError,
    DeliveryError,
    DuplicateRequestError,
    MisconfiguredError,
    PermanentError,
    ThrottledError,
    UnavailableError,
)
from gateway.replies import Replies

__all__ = ["translate", "translated"]

_THROTTLING = {
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "SlowDown",
    "RequestThrottled",
    "ProvisionedThroughputExceededException",
}
_CONFIGURATION = {
    "AccessDeniedException",
    "AccessDenied",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "MissingAuthenticationTokenException",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidAccessKeyId",
    "ResourceNotFoundException",
    "NoSuchBucket",
    "KMS.DisabledException",
    "KMS.NotFoundException",
    "KMS.AccessDeniedException",
    "QueueDoesNotExist",
    "AWS.SimpleQueueService.NonExistentQueue",
}
_CONDITION_FAILED = {"ConditionalCheckFailedException", "PreconditionFailed"}
_ATTACHMENT_REASONS = {
    "INVALID_FILE_SIZE",
    "INVALID_FILE_TYPE",
    "INVALID_FILE_NAME",
    "TOTAL_FILE_SIZE_EXCEEDED",
    "TOTAL_FILE_COUNT_EXCEEDED",
}


@contextmanager
def translated(service: str) -> Iterator[None]:
    """Run an AWS call; whatever it raises leaves as a :class:`DeliveryError`."""
    try:
        yield
    except DeliveryError:
        raise
    except (TimeoutError, ClientError, BotoCoreError, aiohttp.ClientError, OSError) as error:
        raise translate(error, service) from error


def translate(error: BaseException, service: str) -> DeliveryError:
    if isinstance(error, ClientError):
        return _client_error(error, service)
    kind = type(error).__name__
    if isinstance(error, NoCredentialsError | PartialCredentialsError | NoRegionError):
        return MisconfiguredError(str(error), service=service, code=kind)
    if isinstance(error, ParamValidationError):
        return PermanentError(f"request refused by botocore: {error}", service=service, code=kind)
    if isinstance(
        error, ConnectionError | HTTPClientError | aiohttp.ClientError | asyncio.TimeoutError | OSError
    ):
        return UnavailableError(str(error), service=service, code=kind)
    return UnavailableError(f"unexpected: {error}", service=service, code=kind)


def _client_error(error: ClientError, service: str) -> DeliveryError:
    details: Any = error.response.get("Error", {})
    code = str(details.get("Code", ""))
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    name = code or str(status)
    message = str(details.get("Message", ""))
    reason = _attachment_reason(error.response.get("Reason"))
    if code == "IdempotencyException":
        return DuplicateRequestError(message, service=service, code=name)
    if code in _CONDITION_FAILED or status == 412:
        item = error.response.get("Item")  # DynamoDB returns the item, when asked to
        return ConditionFailedError(
            message, item if isinstance(item, dict) else None, service=service, code=name
        )
    if reason:
        return AttachmentsRefusedError(message, reason, service=service, code=name)
    if code in _THROTTLING or status == 429:
        return ThrottledError(message, service=service, code=name)
    if code in _CONFIGURATION or status in (401, 403, 404):
        return MisconfiguredError(message, service=service, code=name)
    if status >= 500:  # it answered: not the same as "could not be reached"
        reply = Replies.STORE_FAILED if service == "s3" else Replies.CONNECT_FAILED
        return UnavailableError(message, reply, service=service, code=name)
    if status == 402 or status == 0:
        return UnavailableError(
            message, service=service, code=name
        )  # 402: a quota (concurrent active emails) that clears later
    return PermanentError(message, service=service, code=name)


def _attachment_reason(reason: object) -> str | None:
    """Connect's ``Reason`` is a one-member structure: ``{"AttachedFile...Reason": "INVALID_FILE_SIZE"}``."""
    if isinstance(reason, dict):
        for value in reason.values():
            if value in _ATTACHMENT_REASONS:
                return str(value)
    return None
