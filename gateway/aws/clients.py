"""The aiobotocore clients for S3 and Connect (and SQS and DynamoDB for the shared queue), created once and
shared by every delivery.

botocore's own retries are off (one attempt per call): the gateway has exactly one retry layer, so that
attempts never multiply under each other. Endpoints come from the config or from botocore's standard
``AWS_ENDPOINT_URL_CONNECT`` / ``_S3`` / ``_SQS`` / ``_DYNAMODB``; credentials from the standard chain,
unless the sandbox passes its own throwaway ones. When every endpoint is on this machine (the emulator) and
the chain has none, placeholder credentials are used: SigV4 still signs, and nothing real is needed or
exposed.
"""

from __future__ import annotations

import ipaddress
import os
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from gateway.settings import AwsSettings

if TYPE_CHECKING:
    from types_aiobotocore_connect import ConnectClient
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_sqs import SQSClient

__all__ = [
    "LOCAL_CREDENTIALS",
    "SHARED_QUEUE_SERVICES",
    "AwsClients",
    "StaticCredentials",
    "endpoints_are_local",
    "usable_credentials",
]

CONNECT_TIMEOUT_SECONDS = 5
READ_TIMEOUT_SECONDS = 30
# Every SMTP session sends its mail's SQS message while one long poll waits: more than botocore's 10.
QUEUE_POOL_CONNECTIONS = 50


@dataclass(frozen=True)
class StaticCredentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None


LOCAL_CREDENTIALS = StaticCredentials("local-endpoint", "local-endpoint")  # never valid at AWS
SHARED_QUEUE_SERVICES = ("connect", "s3", "sqs", "dynamodb")


def _endpoint(settings: AwsSettings, service: str) -> str | None:
    """The endpoint botocore will use: the configuration's, else the standard environment variables."""
    configured = {
        "connect": settings.connect_endpoint_url,
        "s3": settings.s3_endpoint_url,
        "sqs": settings.sqs_endpoint_url,
        "dynamodb": settings.dynamodb_endpoint_url,
    }[service]
    return (
        configured
        or os.environ.get(f"AWS_ENDPOINT_URL_{service.upper()}")
        or os.environ.get("AWS_ENDPOINT_URL")
    )


def _local(url: str | None) -> bool:
    host = urlsplit(url).hostname if url else None
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def endpoints_are_local(settings: AwsSettings, services: tuple[str, ...] = ("connect", "s3")) -> bool:
    """Whether every service named is served on this machine (the emulator and its S3, a local moto)."""
    return all(_local(_endpoint(settings, service)) for service in services)


async def usable_credentials(
    settings: AwsSettings, given: StaticCredentials | None = None, *, shared_queue: bool = False
) -> tuple[StaticCredentials | None, bool]:
    """The credentials to create clients with (None: botocore's chain), and whether any were found: the
    given ones, the chain's, or, for endpoints on this machine only, placeholders."""
    if given is not None:
        return given, True
    if await get_session().get_credentials() is not None:
        return None, True
    if endpoints_are_local(settings, SHARED_QUEUE_SERVICES if shared_queue else ("connect", "s3")):
        return LOCAL_CREDENTIALS, True
    return None, False


class AwsClients:
    """``async with AwsClients(settings) as aws: aws.s3 ..., aws.connect ...``; with ``shared_queue``
    also ``aws.sqs`` and ``aws.dynamodb``."""

    s3: S3Client
    connect: ConnectClient
    sqs: SQSClient
    dynamodb: DynamoDBClient

    def __init__(
        self,
        settings: AwsSettings,
        credentials: StaticCredentials | None = None,
        *,
        shared_queue: bool = False,
    ) -> None:
        self._settings = settings
        self._credentials = credentials
        self._shared_queue = shared_queue
        self._stack = AsyncExitStack()

    def _client_options(self, service: str, endpoint_url: str | None) -> dict[str, Any]:
        config = AioConfig(
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            read_timeout=READ_TIMEOUT_SECONDS,
        )
        if service in ("sqs", "dynamodb"):
            config = config.merge(AioConfig(max_pool_connections=QUEUE_POOL_CONNECTIONS))
        if service == "s3":
            # SigV4 presigned URLs, as every region requires; path style for a configured endpoint
            # (an IP has no subdomains), botocore's choice otherwise.
            config = config.merge(
                AioConfig(
                    signature_version="s3v4", s3={"addressing_style": "path" if endpoint_url else "auto"}
                )
            )
        options: dict[str, Any] = {"region_name": self._settings.region, "config": config}
        if endpoint_url:
            options["endpoint_url"] = endpoint_url
        if self._credentials:
            options["aws_access_key_id"] = self._credentials.access_key_id
            options["aws_secret_access_key"] = self._credentials.secret_access_key
            options["aws_session_token"] = self._credentials.session_token
        return options

    async def __aenter__(self) -> AwsClients:
        session = get_session()
        self.s3 = await self._stack.enter_async_context(
            session.create_client("s3", **self._client_options("s3", self._settings.s3_endpoint_url))
        )
        self.connect = await self._stack.enter_async_context(
            session.create_client(
                "connect", **self._client_options("connect", self._settings.connect_endpoint_url)
            )
        )
        if self._shared_queue:
            self.sqs = await self._stack.enter_async_context(
                session.create_client("sqs", **self._client_options("sqs", self._settings.sqs_endpoint_url))
            )
            self.dynamodb = await self._stack.enter_async_context(
                session.create_client(
                    "dynamodb", **self._client_options("dynamodb", self._settings.dynamodb_endpoint_url)
                )
            )
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self._stack.aclose()
