"""``mail-gateway check`` in sqs mode: the work queue, its dead-letter queue, the table, and the permissions.

Settings are read back from the services (visibility timeout, retention against ``max_age``, encryption,
the redrive policy and its ``maxReceiveCount``, the table's key, index and TTL); permissions are proven by
doing what the gateways do, on probes: an object under ``[queue] prefix`` put, read and deleted, a probe
message sent, received and deleted (a running gateway that receives it first deletes it), a probe item
written, updated, read, queried and deleted. A TTL the service does not report as enabled is a warning,
not a failure: the gateway never relies on it (it reads past expired items by their time), and some
stand-ins (moto's CloudFormation) do not set it.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.aws.answers import Answers
from gateway.aws.clients import AwsClients
from gateway.aws.dynamodb import KEY, STATE_INDEX, TTL_ATTRIBUTE, Table
from gateway.aws.objects import MailObjects, sha256_of
from gateway.aws.sqs import WorkQueue
from gateway.delivery.shared import records
from gateway.errors import DeliveryError
from gateway.mail import InMemoryContent
from gateway.service.preflight import Check, Status
from gateway.settings import Settings

__all__ = ["shared_queue_checks"]

PROBE_TRIES = 3


class _Failed(Exception):
    pass


async def _check(item: str, action: Callable[[], Awaitable[tuple[Status, str]]]) -> Check:
    try:
        status, detail = await action()
    except (DeliveryError, _Failed) as error:
        return Check(Status.FAIL, item, str(error))
    return Check(status, item, detail)


def _encrypted(attributes: dict[str, str]) -> bool:
    return attributes.get("SqsManagedSseEnabled") == "true" or bool(attributes.get("KmsMasterKeyId"))


async def shared_queue_checks(settings: Settings, aws: AwsClients) -> list[Check]:
    queue = settings.queue
    assert queue.queue_url is not None, "sqs mode names its queue"
    assert queue.table is not None, "sqs mode names its table"
    answers = Answers()
    work = WorkQueue(aws.sqs, queue.queue_url, answers)
    table = Table(aws.dynamodb, queue.table, answers)
    objects = MailObjects(aws.s3, settings.attachments, answers)
    attributes: dict[str, str] = {}
    checks: list[Check] = []

    async def main_queue() -> tuple[Status, str]:
        attributes.update(await work.attributes())
        retention = int(attributes.get("MessageRetentionPeriod", "0"))
        if retention < queue.max_age:
            raise _Failed(
                f"keeps messages {retention / 86400:.1f} days, less than queue.max_age "
                f"({queue.max_age / 86400:.1f} days): mail could vanish before it is given up"
            )
        visibility = attributes.get("VisibilityTimeout")
        detail = f"visibility timeout {visibility} s, retention {retention / 86400:.1f} days"
        if not _encrypted(attributes):
            return Status.WARN, detail + ", not encrypted (SqsManagedSseEnabled or a KMS key)"
        return Status.PASS, detail + ", encrypted"

    checks.append(await _check(f"queue {queue.queue_url}", main_queue))
    if attributes:
        checks.append(
            await _check("dead-letter queue", lambda: _dead_letters(work, attributes, queue.max_attempts))
        )
    checks.append(await _check(f"table {queue.table}", lambda: _table(table)))
    checks.append(await _check(f"time to live of table {queue.table}", lambda: _ttl(table)))
    checks.append(
        await _check(
            f"raw mail under s3://{settings.attachments.bucket}/{queue.prefix}",
            lambda: _objects(objects, queue.prefix),
        )
    )
    checks.append(await _check("queue permissions", lambda: _messages(work)))
    checks.append(await _check("table permissions", lambda: _items(table)))
    return checks


async def _dead_letters(work: WorkQueue, attributes: dict[str, str], max_attempts: int) -> tuple[Status, str]:
    policy = attributes.get("RedrivePolicy")
    if not policy:
        raise _Failed(
            "the queue has no redrive policy: a message that crashes every gateway would come back for ever"
        )
    receives = int(json.loads(policy).get("maxReceiveCount", 0))
    dead = await work.dead_letter_queue(attributes)
    assert dead is not None
    dead_attributes = await dead.attributes()
    retention = int(dead_attributes.get("MessageRetentionPeriod", "0"))
    detail = f"{dead.url} after {receives} receives, retention {retention / 86400:.1f} days"
    warnings = []
    if receives < max_attempts:
        warnings.append(
            f"maxReceiveCount {receives} is below queue.max_attempts ({max_attempts}): the redrive policy, a "
            "safety net, would cut the gateway's own retries short"
        )
    if retention <= int(attributes.get("MessageRetentionPeriod", "0")):
        warnings.append("it keeps messages no longer than the queue: SQS advises longer")
    if not _encrypted(dead_attributes):
        warnings.append("not encrypted")
    if warnings:
        return Status.WARN, detail + "; " + "; ".join(warnings)
    return Status.PASS, detail


async def _table(table: Table) -> tuple[Status, str]:
    description = await table.describe()
    keys = [(k["AttributeName"], k["KeyType"]) for k in description.get("KeySchema", [])]
    if keys != [(KEY, "HASH")]:
        raise _Failed(f"its key is {keys}, not {KEY} (HASH) alone: see deploy/aws/cloudformation.yaml")
    indexes = {index["IndexName"] for index in description.get("GlobalSecondaryIndexes", [])}
    if STATE_INDEX not in indexes:
        raise _Failed(f"it has no index {STATE_INDEX!r}, which `mail-gateway queue` reads")
    return Status.PASS, f"{description.get('TableStatus', 'status unknown')}, index {STATE_INDEX}"


async def _ttl(table: Table) -> tuple[Status, str]:
    try:
        ttl = await table.time_to_live()
    except DeliveryError as error:
        return Status.WARN, f"cannot be verified ({error.summary}); expired items are read past by their time"
    if ttl.get("TimeToLiveStatus") in ("ENABLED", "ENABLING") and ttl.get("AttributeName") == TTL_ATTRIBUTE:
        return Status.PASS, f"{TTL_ATTRIBUTE}, {ttl['TimeToLiveStatus']}"
    said = ttl.get("TimeToLiveStatus", "nothing")
    return Status.WARN, (
        f"not enabled on {TTL_ATTRIBUTE} (the service says {said}): delivered mail and old threads stay "
        "in the table; the gateway reads past them by their time"
    )


async def _objects(objects: MailObjects, prefix: str) -> tuple[Status, str]:
    key = f"{prefix}mail-gateway-check/{secrets.token_hex(8)}/mail.eml"
    probe = InMemoryContent(b"Subject: mail-gateway check\r\n\r\nprobe\r\n")
    await objects.put_mail(key, probe, sha256_of(probe))
    try:
        if (await objects.get_bytes(key)) != probe.data:
            raise _Failed("the object read back is not the one written")
    finally:
        await objects.delete([key])
    return Status.PASS, "put (with its SHA-256 and the configured encryption), get and delete work"


async def _messages(work: WorkQueue) -> tuple[Status, str]:
    token = secrets.token_hex(8)
    await work.send(json.dumps({records.PROBE: token}))
    for _ in range(PROBE_TRIES):
        for message in await work.receive(10, 1, 0):  # seen, not taken: visible again at once
            if message.body == json.dumps({records.PROBE: token}):
                await work.delete(message.receipt)
                return Status.PASS, "send, receive and delete work"
    return Status.PASS, "send and receive work (a running gateway took the probe and deleted it)"


async def _items(table: Table) -> tuple[Status, str]:
    key = f"probe#{secrets.token_hex(8)}"
    await table.put(key, {"probe": True, TTL_ATTRIBUTE: 0})
    try:
        item: Any = await table.update(key, add={"count": 1})
        if item.get("count") != 1 or await table.get(key) is None:
            raise _Failed("the probe item read back is not the one written")
        await table.get_many([key])
        await table.in_state("queued", 1)
    finally:
        await table.delete(key)
    return Status.PASS, "put, update, get, batch get, query and delete work"
