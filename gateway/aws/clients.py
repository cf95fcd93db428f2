"""The aiobotocore clients for S3 and Connect, created once and shared by every delivery.

botocore's own retries are off (one attempt per call): the gateway has exactly one retry layer, so that
attempts never multiply under each other. Endpoints come from the config or from botocore's standard
``AWS_ENDPOINT_URL_CONNECT`` / ``AWS_ENDPOINT_URL_S3``; credentials from the standard chain, unless the
sandbox passes its own throwaway ones.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from gateway.settings import AwsSettings

if TYPE_CHECKING:
    from types_aiobotocore_connect import ConnectClient
    from types_aiobotocore_s3 import S3Client

__all__ = ["AwsClients", "StaticCredentials"]

CONNECT_TIMEOUT_SECONDS = 5
READ_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class StaticCredentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None


class AwsClients:
    """``async with AwsClients(settings) as aws: aws.s3 ..., aws.connect ...``"""

    s3: S3Client
    connect: ConnectClient

    def __init__(self, settings: AwsSettings, credentials: StaticCredentials | None = None) -> None:
        self._settings = settings
        self._credentials = credentials
        self._stack = AsyncExitStack()

    def _client_options(self, service: str, endpoint_url: str | None) -> dict[str, Any]:
        config = AioConfig(
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            read_timeout=READ_TIMEOUT_SECONDS,
        )
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
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self._stack.aclose()
