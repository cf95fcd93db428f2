"""``mail-gateway check``: before the first mail, is the AWS side of the configuration right?

One line per check, naming the item: the configured DNS resolvers, rspamd and clamd answer
(:mod:`gateway.trust.probe`); credentials resolve; each Connect instance exists; each route's
destination is an email address of its instance; each named contact flow exists; the bucket takes a
put, a presigned GET and a delete. The exit status is 0 only when nothing failed.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import aiohttp
from aiobotocore.session import get_session

from gateway.aws.boundary import translate, translated
from gateway.aws.clients import AwsClients, StaticCredentials
from gateway.errors import DeliveryError
from gateway.settings import Settings
from gateway.trust.probe import probe

__all__ = ["Check", "Status", "run_checks"]

MAX_ADDRESS_PAGES = 20
NOT_AN_ADDRESS = "not an email address of the instance: contacts would be refused"
PROBE_PREFIX = "mail-gateway-check/"  # under [attachments] prefix: where the bucket check puts its probe


class Status(StrEnum):
    PASS = "PASS"  # noqa: S105 - a check status, not a password
    FAIL = "FAIL"
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


async def run_checks(settings: Settings, credentials: StaticCredentials | None = None) -> list[Check]:
    checks = [Check(Status.PASS, "config", f"{len(settings.routes)} route(s)")]
    checks += [Check(Status.PASS if p.ok else Status.FAIL, p.item, p.detail) for p in await probe(settings)]
    found = credentials is not None or await get_session().get_credentials() is not None
    if not found:
        checks.append(
            Check(Status.FAIL, "credentials", "none found (environment, shared files, instance or pod role)")
        )
        return checks
    checks.append(Check(Status.PASS, "credentials", "found"))
    try:
        async with AwsClients(settings.aws, credentials) as aws:
            checks += await _connect_checks(settings, aws)
            checks.append(await _attempt(f"bucket {settings.attachments.bucket}", _bucket(settings, aws)))
    except DeliveryError as error:
        checks.append(Check(Status.FAIL, "aws", str(error)))
    return checks


async def _connect_checks(settings: Settings, aws: AwsClients) -> list[Check]:
    checks: list[Check] = []
    instances = list(dict.fromkeys(route.instance_id for route in settings.routes))
    existing = set()
    for instance in instances:
        check = await _attempt(f"instance {instance}", _instance(aws, instance))
        checks.append(check)
        if check.status == Status.PASS:
            existing.add(instance)
    addresses: dict[str, set[str]] = {}
    for route in settings.routes:
        destination = route.destination or (route.match if "*" not in route.match else None)
        item = f"destination {destination} in instance {route.instance_id}"
        if destination is None:
            checks.append(
                Check(
                    Status.SKIP,
                    f"destination of route {route.match}",
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
            item = f"contact flow {flow} in instance {route.instance_id}"
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


async def _bucket(settings: Settings, aws: AwsClients) -> str:
    attachments = settings.attachments
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
