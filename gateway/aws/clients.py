"""The aiobotocore clients for S3 and Connect (and SQS and DynamoDB for the shared queue), created once per
placement and shared by its deliveries.

botocore's own retries are off (one attempt per call): the gateway has exactly one retry layer, so that
attempts never multiply under each other. Endpoints come from the config or from botocore's standard
``AWS_ENDPOINT_URL_CONNECT`` / ``_S3`` / ``_STS`` / ``_SQS`` / ``_DYNAMODB``; credentials from the standard
chain, unless the sandbox passes its own throwaway ones. When every endpoint is on this machine (the
emulator) and the chain has none, placeholder credentials are used: SigV4 still signs, and nothing real is
needed or exposed.

A route with a ``role_arn`` gets clients signed with that role's credentials: assumed through STS with
the gateway's own, refreshed by aiobotocore before they expire (:func:`role_session`). The
:class:`ClientPool` keeps one pair of clients per :class:`~gateway.aws.placement.Placement` (region, role,
endpoints) and closes those no route wants any more once they have been idle a while. The shared queue's
SQS and DynamoDB clients are the gateway's own (the default placement's), never a route's.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import time
from collections.abc import Callable, Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiobotocore.config import AioConfig
from aiobotocore.credentials import (
    AioAssumeRoleCredentialFetcher,
    AioCredentialResolver,
    AioCredentials,
    AioDeferredRefreshableCredentials,
)
from aiobotocore.session import AioSession, get_session
from botocore.credentials import CredentialProvider

from gateway.aws.placement import Placement
from gateway.contact.contract import model_loader
from gateway.settings import AwsSettings

if TYPE_CHECKING:
    from types_aiobotocore_connect import ConnectClient
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_sqs import SQSClient

__all__ = [
    "IDLE_CLOSE_SECONDS",
    "LOCAL_CREDENTIALS",
    "SHARED_QUEUE_SERVICES",
    "AwsClients",
    "ClientPool",
    "StaticCredentials",
    "endpoints_are_local",
    "role_session",
    "sts_endpoint",
    "usable_credentials",
]

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 5
READ_TIMEOUT_SECONDS = 30
ROLE_SESSION_NAME = "mail-gateway"
# An hour (the usual maximum of a role): aiobotocore refreshes 15 minutes before expiry, so shorter
# sessions would be refreshed on every call.
ROLE_SESSION_SECONDS = 3600
IDLE_CLOSE_SECONDS = 300.0  # clients no route wants any more are closed after this long unused
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
        "sts": settings.sts_endpoint_url,
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


def _session() -> AioSession:
    """A session that reads service models through the process's one loader: each model's JSON is parsed
    once, however many placements (regions, roles) open clients."""
    session = get_session()
    session.register_component("data_loader", model_loader())
    return session


async def usable_credentials(
    settings: AwsSettings, given: StaticCredentials | None = None, *, shared_queue: bool = False
) -> tuple[StaticCredentials | None, bool]:
    """The credentials to create clients with (None: botocore's chain), and whether any were found: the
    given ones, the chain's, or, for endpoints on this machine only, placeholders."""
    if given is not None:
        return given, True
    if await _session().get_credentials() is not None:
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
        session: AioSession | None = None,
        *,
        shared_queue: bool = False,
    ) -> None:
        """``session``: one whose credentials sign the calls (an assumed role's); ``credentials`` are
        then not used. ``shared_queue``: open the SQS and DynamoDB clients too."""
        self._settings = settings
        self._credentials = None if session is not None else credentials
        self._session = session
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
        session = self._session or _session()
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


class _RoleProvider(CredentialProvider):
    """Hands a session the role's refreshable credentials (the public way to give a session its own)."""

    METHOD = "route-assume-role"

    def __init__(self, credentials: AioDeferredRefreshableCredentials) -> None:
        self._credentials = credentials

    async def load(self) -> AioDeferredRefreshableCredentials:
        return self._credentials


async def _source_credentials(given: StaticCredentials | None) -> AioCredentials:
    """The gateway's own credentials, which assume the roles."""
    if given is not None:
        return AioCredentials(given.access_key_id, given.secret_access_key, given.session_token)
    found = await _session().get_credentials()
    if found is None:
        found = AioCredentials(LOCAL_CREDENTIALS.access_key_id, LOCAL_CREDENTIALS.secret_access_key)
    return found


def sts_endpoint(placement: Placement) -> str | None:
    """Where the placement's role is assumed: its endpoint, else botocore's choice (the region's STS)."""
    return _endpoint(placement.aws, "sts")


async def role_session(
    placement: Placement, source: StaticCredentials | None, duration: int = ROLE_SESSION_SECONDS
) -> AioSession:
    """A session signing with ``placement``'s role, assumed through the STS of its region (or its
    endpoint) with the gateway's own credentials; AssumeRole runs at the first call and again before the
    credentials expire (aiobotocore's deferred refreshable credentials)."""
    assert placement.role_arn is not None
    own = await _source_credentials(source)
    base = _session()
    endpoint = sts_endpoint(placement)

    def client_creator(service: str, **kwargs: Any) -> Any:  # the fetcher passes the keys as kwargs
        return base.create_client("sts", region_name=placement.region, endpoint_url=endpoint, **kwargs)

    extra: dict[str, Any] = {"RoleSessionName": ROLE_SESSION_NAME, "DurationSeconds": duration}
    if placement.external_id:
        extra["ExternalId"] = placement.external_id
    fetcher = AioAssumeRoleCredentialFetcher(client_creator, own, placement.role_arn, extra_args=extra)
    credentials = AioDeferredRefreshableCredentials(
        refresh_using=fetcher.fetch_credentials, method="assume-role"
    )
    session = _session()
    session.register_component("credential_provider", AioCredentialResolver([_RoleProvider(credentials)]))
    return session


class ClientPool:
    """One :class:`AwsClients` per placement, opened when a route first needs it. :meth:`retain` names
    the placements the configuration still uses; the others are closed once idle for ``idle_close``
    seconds (a delivery of a mail accepted under the old configuration may still be using them)."""

    def __init__(
        self,
        credentials: StaticCredentials | None = None,
        idle_close: float = IDLE_CLOSE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._credentials = credentials
        self._idle_close = idle_close
        self._clock = clock
        self._open: dict[Placement, AwsClients] = {}
        self._used: dict[Placement, float] = {}
        self._wanted: frozenset[Placement] | None = None  # None: every placement is wanted
        self._lock = asyncio.Lock()

    @property
    def placements(self) -> frozenset[Placement]:
        """Those with open clients."""
        return frozenset(self._open)

    async def clients(self, placement: Placement) -> AwsClients:
        self._used[placement] = self._clock()
        found = self._open.get(placement)
        if found is None:
            async with self._lock:
                found = self._open.get(placement)
                if found is None:
                    session = None
                    if placement.role_arn is not None:
                        session = await role_session(placement, self._credentials)
                    found = await AwsClients(placement.aws, self._credentials, session).__aenter__()
                    self._open[placement] = found
                    log.debug("AWS clients opened for %s", placement.describe())
        await self.sweep()
        return found

    async def retain(self, wanted: Iterable[Placement]) -> None:
        """The placements the configuration uses now; others are closed when idle."""
        self._wanted = frozenset(wanted)
        await self.sweep()

    async def sweep(self) -> None:
        """Close the clients no route wants that have been idle for ``idle_close`` seconds."""
        if self._wanted is None:
            return
        now = self._clock()
        for placement in list(self._open):
            idle = now - self._used.get(placement, now)
            if placement not in self._wanted and idle >= self._idle_close:
                clients = self._open.pop(placement, None)  # None: a sweep running beside closed it
                self._used.pop(placement, None)
                if clients is None:
                    continue
                await clients.__aexit__(None, None, None)
                log.info("AWS clients closed for %s: no route uses them", placement.describe())

    async def close(self) -> None:
        clients, self._open = list(self._open.values()), {}
        for client in clients:
            await client.__aexit__(None, None, None)
