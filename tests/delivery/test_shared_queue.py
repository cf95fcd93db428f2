"""sqs mode over real protocols: SMTP in, S3 + SQS + DynamoDB (moto, from the template's stack) between,
the Connect emulator out."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.sandbox.emulator import EmulatorServer
from gateway.service.gateway import Gateway

from ..helpers import CREDENTIALS, SmtpClient, contacts, mail, put_faults, wait_until
from ..shared import keys_under, mail_items, queue_depth, shared_settings


async def test_mail_is_queued_in_s3_and_sqs_then_delivered_and_cleaned_up(
    emulator: EmulatorServer, aws_url: str, stack: dict[str, str], tmp_path: Path
) -> None:
    settings = shared_settings(emulator, aws_url, stack)
    async with Gateway(settings, CREDENTIALS) as gateway:
        code, text = await SmtpClient(gateway.smtp_port).send(mail())
        assert code == 250, text
        assert text.startswith("2.0.0 Queued as ")
        queue_id = text.rsplit(" ", 1)[1]
        await wait_until(lambda: len(contacts(emulator)) == 1)
        await wait_until(lambda: mail_items(aws_url, stack["TableName"])[queue_id]["state"] == "done")
    item = mail_items(aws_url, stack["TableName"])[queue_id]
    assert item["targets"][0]["contact_id"] == contacts(emulator)[0].contact_id
    assert item["expires_at"] > item["received_at"]  # the table's TTL forgets it after a day
    assert keys_under(aws_url, stack["BucketName"], "queue/") == []  # the bytes and the request: gone
    assert queue_depth(aws_url, stack["QueueUrl"]) == 0


async def test_transient_failures_are_retried_and_the_stored_request_resent_unchanged(
    emulator: EmulatorServer, aws_url: str, stack: dict[str, str]
) -> None:
    await put_faults(emulator, error_rate=1.0)
    settings = shared_settings(emulator, aws_url, stack)
    async with Gateway(settings, CREDENTIALS) as gateway:
        code, _ = await SmtpClient(gateway.smtp_port).send(mail())
        assert code == 250
        await wait_until(lambda: len(emulator.connect.calls) >= 3, seconds=30)
        await put_faults(emulator, error_rate=0.0)
        await wait_until(lambda: any(c["Status"] == 200 for c in emulator.connect.calls), seconds=30)
    bodies = {json.dumps(c["Request"], sort_keys=True) for c in emulator.connect.calls}
    assert len(bodies) == 1  # every attempt sent the very same request, read back from S3
    assert len(contacts(emulator)) == 1
