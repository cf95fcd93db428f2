"""``mail-gateway check``: before the first mail, is the configuration right, here and on the AWS side?

One line per check, naming the item: the TLS certificate and key and the AUTH credentials load as the
server loads them; warnings for limits that could go wrong (relays behind a proxy, memory short for the
default connections); the configured DNS resolvers, rspamd and clamd answer (:mod:`gateway.trust.probe`);
credentials resolve (endpoints on this machine, the emulator, need none); then for each placement (a
region and role: each route in its own), the role can be assumed, each Connect instance exists, each
route's destination is an email address of its instance, each named contact flow exists, and the bucket
takes a put, a presigned GET and a delete. Checks of a route placed on its own (``region``,
``role_arn``, ``bucket``...) name the route and where it is, so that a failure says which route it is.
In sqs mode, the shared queue too, with the gateway's own credentials in ``[aws]``'s region
(:mod:`.queue_checks`). The exit status is 0 only when nothing failed (warnings do not fail).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

import aiohttp

from gateway.aws.boundary import translate, translated
from gateway.aws.clients import (
    LOCAL_CREDENTIALS,
    AwsClients,
    ClientPool,
    StaticCredentials,
    role_session,
    sts_endpoint,
    usable_credentials,
)
from gateway.aws.placement import Placement, placement, route_attachments
from gateway.config.frontdoor import memory_per_connection
from gateway.config.machine import read_memory_limit
from gateway.errors import ConfigError, DeliveryError, StartupError
from gateway.frontdoor.credentials import Credentials
from gateway.frontdoor.tls import server_context
from gateway.settings import AttachmentSettings, QueueMode, RouteSettings, Settings
from gateway.trust.probe import probe

__all__ = ["Check", "Status", "local_checks", "run_checks"]

MAX_ADDRESS_PAGES = 20
NOT_AN_ADDRESS = "not an email address of the instance: contacts would be refused"
PROBE_PREFIX = "mail-gateway-check/"  # under [attachments] prefix: where the bucket check puts its probe


class Status(StrEnum):
    PASS = "PASS"  # noqa: S105 - a check status, not a password
    FAIL = "FAIL"
    WARN = "WARN"  # works, but may not do what was meant
    SKIP = "SKIP"  # not checked, and why (a destination that is each recipient)


@dataclass(frozen=True)
class Check:
    status: Status
    item: str
    detail: str

    def __str__(self) -> str:
        return f"{self.status} {self.item}: {self.detail}"


async def _attempt(item: str, action: Awaitable[str]) -> Check:
    try:
        return Check(Status.PASS, item, await action)
    except DeliveryError as error:
        return Check(Status.FAIL, item, str(error))
    except _CheckFailed as failure:
        return Check(Status.FAIL, item, str(failure))


class _CheckFailed(Exception):
    pass


async def run_checks(
    settings: Settings, credentials: StaticCredentials | None = None, memory: int | None = None
) -> list[Check]:
    """``memory``: the machine's, in bytes (its cgroup limit or RAM, read unless given)."""
    checks = [Check(Status.PASS, "config", f"{len(settings.routes)} route(s)")]
    checks += local_checks(settings, read_memory_limit() if memory is None else memory)
    checks += [Check(Status.PASS if p.ok else Status.FAIL, p.item, p.detail) for p in await probe(settings)]
    shared = settings.queue.mode == QueueMode.SQS
    credentials, found = await usable_credentials(settings.aws, credentials, shared_queue=shared)
    if not found:
        checks.append(
            Check(Status.FAIL, "credentials", "none found (environment, shared files, instance or pod role)")
        )
        return checks
    if credentials is LOCAL_CREDENTIALS:
        checks.append(Check(Status.PASS, "credentials", "none needed: every endpoint is on this machine"))
    else:
        checks.append(Check(Status.PASS, "credentials", "found"))
    pool = ClientPool(credentials)
    try:
        for (where, attachments), routes in _placed(settings).items():
            checks += await _placement_checks(where, attachments, routes, pool, credentials)
        if shared:  # the queue, the dead-letter queue, the table and the permissions (sqs mode)
            from gateway.service.queue_checks import shared_queue_checks

            async with AwsClients(settings.aws, credentials, shared_queue=True) as aws:
                checks += await shared_queue_checks(settings, aws)
    except DeliveryError as error:
        checks.append(Check(Status.FAIL, "aws", str(error)))
    finally:
        await pool.close()
    return checks


_PLACEMENT_KEYS = tuple(
    f.name
    for f in fields(RouteSettings)
    if f.name in {f.name for f in fields(Placement)} | {"bucket", "prefix"}
)


def _placed(settings: Settings) -> dict[tuple[Placement, AttachmentSettings], list[RouteSettings]]:
    """The routes by where their contacts and attachments go, in the file's order."""
    groups: dict[tuple[Placement, AttachmentSettings], list[RouteSettings]] = {}
    for route in settings.routes:
        key = placement(route, settings.aws), route_attachments(route, settings.attachments)
        groups.setdefault(key, []).append(route)
    return groups


async def _placement_checks(
    where: Placement,
    attachments: AttachmentSettings,
    routes: Sequence[RouteSettings],
    pool: ClientPool,
    credentials: StaticCredentials | None,
) -> list[Check]:
    """The checks of the routes of one placement; named after them when they are placed on their own."""
    own = any(getattr(route, key) is not None for route in routes for key in _PLACEMENT_KEYS)
    label = f"route {', '.join(r.match for r in routes)} in {where.describe()}: " if own else ""
    checks: list[Check] = []
    if where.role_arn is not None:
        role = await _attempt(f"{label}role", _assume(where, credentials))
        checks.append(role)
        if role.status == Status.FAIL:
            checks.append(Check(Status.SKIP, f"{label}instances and bucket", "the role could not be assumed"))
            return checks
    aws = await pool.clients(where)
    checks += await _connect_checks(routes, aws, label)
    checks.append(await _attempt(f"{label}bucket {attachments.bucket}", _bucket(attachments, aws)))
    return checks


async def _assume(where: Placement, credentials: StaticCredentials | None) -> str:
    """AssumeRole, then who STS says the calls are made as."""
    session = await role_session(where, credentials)
    async with session.create_client(
        "sts", region_name=where.region, endpoint_url=sts_endpoint(where)
    ) as sts:
        with translated("sts"):
            identity = await sts.get_caller_identity()
    return f"assumed: {identity['Arn']}"


def local_checks(settings: Settings, memory: int) -> list[Check]:
    """What needs no AWS: the files the server loads at start, and limits that may not do what was meant."""
    checks: list[Check] = []
    tls = settings.tls
    if tls.enabled:
        try:
            server_context(tls)
        except StartupError as error:
            checks.append(Check(Status.FAIL, "tls", str(error)))
        else:
            checks.append(Check(Status.PASS, "tls", f"{tls.certificate} and {tls.key} load"))
    path = settings.auth.credentials
    if path is not None:
        try:
            users = Credentials.load(path).count
        except ConfigError as error:
            checks.append(Check(Status.FAIL, "auth", str(error)))
        except OSError as error:
            checks.append(
                Check(Status.FAIL, "auth", f"auth.credentials: {path}: {StartupError.reason(error)}")
            )
        else:
            checks.append(Check(Status.PASS, "auth", f"{users} user(s) in {path}"))
    return checks + _limit_warnings(settings, memory)


def _limit_warnings(settings: Settings, memory: int) -> list[Check]:
    warnings = []
    access = settings.access
    if not access.proxy_protocol:
        proxies = [
            str(relay)
            for relay in access.relay_networks
            if any(relay.version == proxy.version and relay.overlaps(proxy) for proxy in access.proxy_trusted)
        ]
        if proxies:
            warnings.append(
                Check(
                    Status.WARN,
                    "access.relay_networks",
                    f"{', '.join(proxies)} holds a load balancer of proxy_trusted while proxy_protocol is "
                    "off: every client it forwards would count as a relay, free of the per-client limits",
                )
            )
        everyone = [str(relay) for relay in access.relay_networks if relay.prefixlen == 0]
        if everyone:
            warnings.append(
                Check(
                    Status.WARN,
                    "access.relay_networks",
                    f"{', '.join(everyone)} makes every client a relay, free of the per-client limits",
                )
            )
    limits, size = settings.limits, settings.smtp.max_message_size
    need = limits.max_connections * memory_per_connection(limits.max_line_length)
    judged = settings.authentication.enabled or settings.filters.enabled
    if judged:  # the sender checks and the filters read each mail whole, once per connection
        need += limits.max_connections * size
    if need > memory:
        cause = f" of {size / 1024**2:.0f} MiB mails judged whole" if judged else ""
        warnings.append(
            Check(
                Status.WARN,
                "limits.max_connections",
                f"{limits.max_connections} connections{cause} may need {need / 1024**2:,.0f} MiB at once, "
                f"more than this machine's {memory / 1024**2:,.0f} MiB: lower limits.max_connections"
                + (" or smtp.max_message_size" if judged else ""),
            )
        )
    return warnings


async def _connect_checks(routes: Sequence[RouteSettings], aws: AwsClients, label: str) -> list[Check]:
    checks: list[Check] = []
    instances = list(dict.fromkeys(route.instance_id for route in routes))
    existing = set()
    for instance in instances:
        check = await _attempt(f"{label}instance {instance}", _instance(aws, instance))
        checks.append(check)
        if check.status == Status.PASS:
            existing.add(instance)
    addresses: dict[str, set[str]] = {}
    for route in routes:
        destination = route.destination or (route.match if "*" not in route.match else None)
        item = f"{label}destination {destination} in instance {route.instance_id}"
        if destination is None:
            checks.append(
                Check(
                    Status.SKIP,
                    f"{label}destination of route {route.match}",
                    "the recipient itself, known when mail comes",
                )
            )
        elif route.instance_id in existing:
            if route.instance_id not in addresses:
                try:
                    addresses[route.instance_id] = await _addresses(aws, route.instance_id)
                except DeliveryError as error:
                    detail = f"cannot list the instance's addresses: {error!s}"
                    checks.append(Check(Status.FAIL, item, detail))
                    continue
            known = destination.casefold() in addresses[route.instance_id]
            checks.append(
                Check(Status.PASS, item, "an email address of the instance")
                if known
                else Check(
                    Status.FAIL, item, "not an email address of the instance: contacts would be refused"
                )
            )
        if route.contact_flow_id:
            flow = route.contact_flow_id
            item = f"{label}contact flow {flow} in instance {route.instance_id}"
            checks.append(await _attempt(item, _flow(aws, route.instance_id, flow)))
    return checks


async def _instance(aws: AwsClients, instance: str) -> str:
    with translated("connect"):
        answer = await aws.connect.describe_instance(InstanceId=instance)
    return f"exists ({answer['Instance'].get('InstanceStatus', 'status unknown')})"


async def _addresses(aws: AwsClients, instance: str) -> set[str]:
    found: set[str] = set()
    options: dict[str, Any] = {"InstanceId": instance, "MaxResults": 100}
    for _ in range(MAX_ADDRESS_PAGES):
        with translated("connect"):
            page = await aws.connect.search_email_addresses(**options)
        found |= {item["EmailAddress"].casefold() for item in page.get("EmailAddresses", [])}
        if not page.get("NextToken"):
            break
        options["NextToken"] = page["NextToken"]
    return found


async def _flow(aws: AwsClients, instance: str, flow: str) -> str:
    with translated("connect"):
        answer = await aws.connect.describe_contact_flow(InstanceId=instance, ContactFlowId=flow)
    return f"exists ({answer['ContactFlow'].get('State', 'state unknown')})"


async def _bucket(attachments: AttachmentSettings, aws: AwsClients) -> str:
    key = f"{attachments.prefix}{PROBE_PREFIX}{secrets.token_hex(8)}"
    body = b"mail-gateway check"
    extra: dict[str, Any] = {}
    if attachments.sse:
        extra["ServerSideEncryption"] = attachments.sse
    if attachments.kms_key_id:
        extra["SSEKMSKeyId"] = attachments.kms_key_id
    with translated("s3"):
        await aws.s3.put_object(Bucket=attachments.bucket, Key=key, Body=body, **extra)
    try:
        with translated("s3"):
            url: str = await aws.s3.generate_presigned_url(
                "get_object", Params={"Bucket": attachments.bucket, "Key": key}, ExpiresIn=60
            )
        try:
            async with aiohttp.ClientSession() as http, http.get(url) as response:
                fetched = await response.read()
        except aiohttp.ClientError as error:
            raise translate(error, "s3") from error
        if fetched != body:
            raise _CheckFailed(f"the presigned URL answered HTTP {response.status}, not the object")
    finally:
        with translated("s3"):
            await aws.s3.delete_object(Bucket=attachments.bucket, Key=key)
    return "put, presigned GET and delete work"
