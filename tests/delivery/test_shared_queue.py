"""sqs mode over real protocols: SMTP in, S3 + SQS + DynamoDB (moto, from the template's stack) between,
the Connect emulator out."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.aws.objects import sha256_of
from gateway.delivery.shared.records import Envelope, envelope_of, thread_key
from gateway.errors import StartupError
from gateway.frontdoor.smtp import SmtpServer
from gateway.mail import InMemoryContent, ReceivedMail, Target
from gateway.sandbox.emulator import EmulatorServer
from gateway.service.gateway import Gateway
from gateway.settings import AuthenticationSettings, AutomaticPolicy, AutomaticSettings

from ..helpers import CREDENTIALS, RecordingSink, SmtpClient, contacts, http_get, mail, put_faults, wait_until
from ..shared import (
    SUPPORT,
    client,
    keys_under,
    mail_gateway,
    mail_items,
    queue_depth,
    shared_config,
    shared_settings,
)


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


async def test_the_trust_verdicts_travel_with_the_mail_and_reach_every_attempt(
    emulator: EmulatorServer, aws_url: str, stack: dict[str, str]
) -> None:
    """What the checks found at DATA is kept in the item (and the message), not recomputed: each attempt,
    by whichever gateway, builds the request with them, as in spool mode."""
    await put_faults(emulator, error_rate=1.0)
    settings = replace(
        shared_settings(emulator, aws_url, stack),
        authentication=AuthenticationSettings(enabled=True, authserv_id="mx.gateway.test"),
    )  # the test client is an own relay (loopback): judged as internal, without DNS
    async with Gateway(settings, CREDENTIALS) as gateway:
        code, text = await SmtpClient(gateway.smtp_port).send(mail())
        assert code == 250, text
        queue_id = text.rsplit(" ", 1)[1]
        item = mail_items(aws_url, stack["TableName"])[queue_id]
        assert json.loads(item["verdicts"])  # stored with the mail
        await wait_until(lambda: len(emulator.connect.calls) >= 2, seconds=30)
    await put_faults(emulator, error_rate=0.0)
    async with Gateway(shared_settings(emulator, aws_url, stack), CREDENTIALS):  # no checks of its own
        await wait_until(lambda: len(contacts(emulator)) == 1, seconds=30)
    [contact] = contacts(emulator)
    assert contact.request["Attributes"]["gateway_spf"] == "none"
    assert envelope_of(item).verdicts == item["verdicts"]


def dead_letters(url: str, outputs: dict[str, str]) -> list[str]:
    """The bodies in the dead-letter queue (seen, not taken: visible again at once)."""
    answer = client(url, "sqs").receive_message(
        QueueUrl=outputs["DeadLetterQueueUrl"], MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=0
    )
    return [message["Body"] for message in answer.get("Messages", [])]


async def test_a_permanent_refusal_is_dead_letters_with_a_notification_and_a_redrive_delivers_it(
    emulator: EmulatorServer,
    aws_url: str,
    stack: dict[str, str],
    smarthost: tuple[SmtpServer, RecordingSink],
    tmp_path: Path,
) -> None:
    emulator.connect.addresses = ("*@elsewhere.example",)  # support@example.com is not an address of it
    settings = shared_settings(emulator, aws_url, stack, smarthost=("127.0.0.1", smarthost[0].port))
    async with Gateway(settings, CREDENTIALS) as gateway:
        _, text = await SmtpClient(gateway.smtp_port).send(mail())
        queue_id = text.rsplit(" ", 1)[1]
        await wait_until(lambda: mail_items(aws_url, stack["TableName"])[queue_id].get("notice") == "sent")
        dead = mail_items(aws_url, stack["TableName"])[queue_id]
        assert dead["state"] == "dead"
        assert "is not an email address of instance" in dead["last_error"]
        [notification] = smarthost[1].mails
        assert notification.sender == ""
        assert "Status: 5.6.0" in notification.content.read().decode()
        assert [json.loads(body)["id"] for body in dead_letters(aws_url, stack)] == [queue_id]
        assert queue_depth(aws_url, stack["QueueUrl"]) == 0
        assert keys_under(aws_url, stack["BucketName"], f"queue/{queue_id}/")  # kept for a retry

        emulator.connect.addresses = ("*@example.com",)
        config = shared_config(tmp_path, emulator, aws_url, stack)
        status, out = await mail_gateway("queue", "--config", str(config), "retry", "--all-dead")
        assert (status, out) == (0, f"1 mail(s) queued again: {queue_id}\n")
        await wait_until(lambda: len(contacts(emulator)) == 1, seconds=20)
        await wait_until(lambda: mail_items(aws_url, stack["TableName"])[queue_id]["state"] == "done")
    assert dead_letters(aws_url, stack) == []  # the redrive took its copy out of the dead-letter queue


async def test_expired_mail_is_given_up(
    emulator: EmulatorServer, aws_url: str, stack: dict[str, str], smarthost: tuple[SmtpServer, RecordingSink]
) -> None:
    await put_faults(emulator, error_rate=1.0)
    settings = shared_settings(
        emulator, aws_url, stack, max_age=0.5, smarthost=("127.0.0.1", smarthost[0].port)
    )
    async with Gateway(settings, CREDENTIALS) as gateway:
        _, text = await SmtpClient(gateway.smtp_port).send(mail())
        queue_id = text.rsplit(" ", 1)[1]
        await wait_until(lambda: mail_items(aws_url, stack["TableName"])[queue_id].get("notice") == "sent")
    dead = mail_items(aws_url, stack["TableName"])[queue_id]
    assert dead["state"] == "dead" and dead["last_error"].startswith("gave up after")
    assert "Status: 5.4.7" in smarthost[1].mails[0].content.read().decode()


async def test_parked_mail_is_kept_without_a_message_and_sent_on_by_a_retry(
    emulator: EmulatorServer, aws_url: str, stack: dict[str, str], tmp_path: Path
) -> None:
    settings = replace(
        shared_settings(emulator, aws_url, stack), automatic=AutomaticSettings(AutomaticPolicy.DROP)
    )
    async with Gateway(settings, CREDENTIALS) as gateway:
        code, text = await SmtpClient(gateway.smtp_port).send(mail(Auto_Submitted="auto-replied"))
        assert code == 250 and "kept, not delivered" in text
        queue_id = text.rsplit("(", 1)[1].rstrip(")")
        assert mail_items(aws_url, stack["TableName"])[queue_id]["state"] == "parked"
        assert queue_depth(aws_url, stack["QueueUrl"]) == 0  # parked: no message
        config = shared_config(tmp_path, emulator, aws_url, stack)
        assert await mail_gateway("queue", "--config", str(config), "retry", queue_id) == (
            0,
            f"{queue_id} queued again\n",
        )
        await wait_until(lambda: len(contacts(emulator)) == 1, seconds=20)


async def test_a_reply_is_threaded_through_the_table_and_an_expired_thread_is_not(
    emulator: EmulatorServer, aws_url: str, stack: dict[str, str]
) -> None:
    # A thread DynamoDB's TTL has not removed yet (moto never does): past its time, it is not used.
    client(aws_url, "dynamodb").put_item(
        TableName=stack["TableName"],
        Item={
            "pk": {"S": thread_key("instance-1", "<old@client.test>")},
            "contact_id": {"S": "old-contact"},
            "expires_at": {"N": str(int(time.time()) - 60)},
        },
    )
    async with Gateway(shared_settings(emulator, aws_url, stack), CREDENTIALS) as gateway:
        smtp = SmtpClient(gateway.smtp_port)
        await smtp.send(mail("<first@client.test>"))
        await wait_until(lambda: len(contacts(emulator)) == 1)
        first = contacts(emulator)[0].contact_id
        await smtp.send(mail("<second@client.test>", In_Reply_To="<first@client.test>"))
        await smtp.send(mail("<third@client.test>", In_Reply_To="<old@client.test>"))
        await wait_until(lambda: len(contacts(emulator)) == 3)
    related = {
        c.request["EmailMessage"]["RawMessage"]["Headers"]["MESSAGE_ID"]: c.request.get("RelatedContactId")
        for c in contacts(emulator)
    }
    assert related == {
        "<first@client.test>": None,
        "<second@client.test>": first,
        "<third@client.test>": None,
    }


async def test_a_message_sqs_delivers_twice_makes_one_contact(
    emulator: EmulatorServer, aws_url: str, stack: dict[str, str]
) -> None:
    """A standard queue may deliver a message twice: the item's claim lets one worker deliver it; the
    other copy waits until the claim ends, sees the mail done and goes."""
    await put_faults(emulator, latency_ms=1500)
    async with Gateway(shared_settings(emulator, aws_url, stack, workers=4), CREDENTIALS) as gateway:
        _, text = await SmtpClient(gateway.smtp_port).send(mail())
        queue_id = text.rsplit(" ", 1)[1]
        body = envelope_of(mail_items(aws_url, stack["TableName"])[queue_id]).body()
        for _ in range(2):
            client(aws_url, "sqs").send_message(QueueUrl=stack["QueueUrl"], MessageBody=body)
        await wait_until(lambda: len(contacts(emulator)) == 1, seconds=20)
        await wait_until(lambda: queue_depth(aws_url, stack["QueueUrl"]) == 0, seconds=20)
    assert len(emulator.connect.calls) == 1


async def test_a_message_whose_item_was_never_written_is_delivered_and_one_whose_mail_is_gone_dropped(
    emulator: EmulatorServer, aws_url: str, stack: dict[str, str]
) -> None:
    """A gateway that died between sending the message and writing the item: the worker writes it. A
    message of a mail an operator deleted (its bytes gone): dropped."""
    raw = mail("<orphan@client.test>")
    target = Target(SUPPORT, "support@example.com")
    received = ReceivedMail(
        "customer@client.test", ("support@example.com",), (target,), InMemoryContent(raw), "p", "h"
    )
    content = InMemoryContent(raw)
    kept = Envelope.of(
        "01orphan",
        received,
        time.time(),
        "<orphan@client.test>",
        "queue/01orphan/mail.eml",
        sha256_of(content),
    )
    gone = Envelope.of("01gone", received, time.time(), None, "queue/01gone/mail.eml", sha256_of(content))
    s3, sqs = client(aws_url, "s3"), client(aws_url, "sqs")
    s3.put_object(Bucket=stack["BucketName"], Key=kept.key, Body=raw)
    for envelope in (kept, gone):
        sqs.send_message(QueueUrl=stack["QueueUrl"], MessageBody=envelope.body())
    async with Gateway(shared_settings(emulator, aws_url, stack), CREDENTIALS):
        await wait_until(lambda: len(contacts(emulator)) == 1, seconds=20)
        await wait_until(lambda: queue_depth(aws_url, stack["QueueUrl"]) == 0, seconds=20)
    assert set(mail_items(aws_url, stack["TableName"])) == {"01orphan"}


async def test_a_stranger_message_goes_to_the_dead_letter_queue_and_a_probe_is_deleted(
    emulator: EmulatorServer, aws_url: str, stack: dict[str, str]
) -> None:
    sqs = client(aws_url, "sqs")
    sqs.send_message(QueueUrl=stack["QueueUrl"], MessageBody="not a mail")
    sqs.send_message(QueueUrl=stack["QueueUrl"], MessageBody='{"probe": "x"}')
    async with Gateway(shared_settings(emulator, aws_url, stack), CREDENTIALS):
        await wait_until(lambda: queue_depth(aws_url, stack["QueueUrl"]) == 0, seconds=20)
    assert dead_letters(aws_url, stack) == ["not a mail"]


async def test_shutdown_releases_the_mail_under_way_and_another_gateway_delivers_it_once(
    emulator: EmulatorServer, aws_url: str, stack: dict[str, str]
) -> None:
    await put_faults(emulator, latency_ms=1500)
    settings = shared_settings(emulator, aws_url, stack, shutdown_grace=0.2)
    async with Gateway(settings, CREDENTIALS) as gateway:
        _, text = await SmtpClient(gateway.smtp_port).send(mail())
        queue_id = text.rsplit(" ", 1)[1]
        await wait_until(lambda: mail_items(aws_url, stack["TableName"])[queue_id]["state"] == "active")
        await asyncio.sleep(0.5)  # the call is under way, waiting for the slow emulator
    assert mail_items(aws_url, stack["TableName"])[queue_id]["state"] == "queued"
    await put_faults(emulator, latency_ms=0)
    async with Gateway(settings, CREDENTIALS):
        await wait_until(
            lambda: mail_items(aws_url, stack["TableName"])[queue_id]["state"] == "done", seconds=20
        )
    assert len(contacts(emulator)) == 1


async def test_an_sqs_or_s3_outage_at_data_is_a_451_and_the_gateway_unready(
    emulator: EmulatorServer, aws_url: str, stack: dict[str, str]
) -> None:
    async with Gateway(shared_settings(emulator, aws_url, stack), CREDENTIALS) as gateway:
        assert gateway.http is not None
        assert (await http_get(gateway.http.port, "/readyz"))[0] == 200
        client(aws_url, "sqs").delete_queue(QueueUrl=stack["QueueUrl"])
        code, text = await SmtpClient(gateway.smtp_port).send(mail())
        assert (code, text) == (451, "4.3.0 Temporary local problem; please try again later")
        status, body = await http_get(gateway.http.port, "/readyz")
        assert status == 503 and "SQS is not answering" in body
        client(aws_url, "s3").delete_bucket(Bucket=stack["BucketName"])
        code, _ = await SmtpClient(gateway.smtp_port).send(mail())
        assert code == 451
        status, body = await http_get(gateway.http.port, "/readyz")
        assert status == 503 and "S3 is not answering" in body
    assert contacts(emulator) == []


async def test_a_queue_that_does_not_exist_stops_the_start_naming_its_key(
    emulator: EmulatorServer, aws_url: str, stack: dict[str, str]
) -> None:
    settings = shared_settings(emulator, aws_url, {**stack, "QueueUrl": stack["QueueUrl"] + "-missing"})
    with pytest.raises(StartupError, match=r"^queue\.queue_url: the shared queue cannot be used"):
        async with Gateway(settings, CREDENTIALS):
            pass
    settings = shared_settings(emulator, aws_url, {**stack, "TableName": "missing-table"})
    with pytest.raises(StartupError, match=r"^queue\.table: "):
        async with Gateway(settings, CREDENTIALS):
            pass
