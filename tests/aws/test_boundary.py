"""The error boundary: every botocore and network failure lands in the right class."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)

from gateway.aws.boundary import translate, translated
from gateway.errors import (
    AttachmentsRefusedError,
    DuplicateRequestError,
    MisconfiguredError,
    PermanentError,
    ThrottledError,
    UnavailableError,
)


def client_error(code: str, status: int, **extra: Any) -> ClientError:
    response: Any = {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}
    response.update(extra)
    return ClientError(response, "StartEmailContact")


@pytest.mark.parametrize(
    ("error", "expected", "transient"),
    [
        (client_error("ThrottlingException", 429), ThrottledError, True),
        (client_error("SlowDown", 503), ThrottledError, True),
        (client_error("InternalServiceException", 500), UnavailableError, True),
        (client_error("ServiceUnavailable", 503), UnavailableError, True),
        (client_error("AccessDeniedException", 403), MisconfiguredError, True),
        (client_error("ResourceNotFoundException", 404), MisconfiguredError, True),
        (client_error("NoSuchBucket", 404), MisconfiguredError, True),
        (client_error("ServiceQuotaExceededException", 402), UnavailableError, True),
        (client_error("InvalidRequestException", 400), PermanentError, False),
        (
            client_error(
                "InvalidRequestException",
                400,
                Reason={"AttachedFileInvalidRequestExceptionReason": "INVALID_FILE_TYPE"},
            ),
            AttachmentsRefusedError,
            False,
        ),
        (
            client_error(
                "ServiceQuotaExceededException",
                402,
                Reason={"AttachedFileServiceQuotaExceededExceptionReason": "TOTAL_FILE_SIZE_EXCEEDED"},
            ),
            AttachmentsRefusedError,
            False,
        ),
        (client_error("IdempotencyException", 409), DuplicateRequestError, False),
        (EndpointConnectionError(endpoint_url="https://x"), UnavailableError, True),
        (ConnectTimeoutError(endpoint_url="https://x"), UnavailableError, True),
        (ReadTimeoutError(endpoint_url="https://x"), UnavailableError, True),
        (NoCredentialsError(), MisconfiguredError, True),
        (ParamValidationError(report="bad"), PermanentError, False),
        (aiohttp.ClientConnectionError("reset"), UnavailableError, True),
        (TimeoutError(), UnavailableError, True),
    ],
)
def test_translate(error: Exception, expected: type, transient: bool) -> None:
    translated_error = translate(error, "connect")
    assert type(translated_error) is expected
    assert translated_error.transient is transient
    assert translated_error.reply.code == (451 if transient else translated_error.reply.code)


def test_attachment_reason_is_kept() -> None:
    error = translate(
        client_error(
            "InvalidRequestException",
            400,
            Reason={"AttachedFileInvalidRequestExceptionReason": "INVALID_FILE_SIZE"},
        ),
        "connect",
    )
    assert isinstance(error, AttachmentsRefusedError)
    assert error.reason == "INVALID_FILE_SIZE"


def test_translated_context_converts_and_chains() -> None:
    with pytest.raises(ThrottledError) as caught, translated("s3"):
        raise client_error("SlowDown", 503)
    assert isinstance(caught.value.__cause__, ClientError)
    assert "s3: SlowDown" in str(caught.value)


def test_an_answer_with_an_error_is_not_called_unreachable() -> None:
    """A 5xx came from the service: the reply says so, apart from a service that never answered."""
    answered = translate(client_error("InternalServiceException", 500), "connect")
    assert str(answered.reply) == "451 4.3.0 Amazon Connect answered with an error; please try again later"
    store = translate(client_error("InternalError", 500), "s3")
    assert str(store.reply) == (
        "451 4.3.0 The attachment store (Amazon S3) answered with an error; please try again later"
    )
    silent = translate(EndpointConnectionError(endpoint_url="https://x"), "connect")
    assert str(silent.reply) == "451 4.4.1 Amazon Connect could not be reached; please try again later"
