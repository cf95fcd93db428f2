"""Spool mode over real sockets: queue, workers, retries, dead letters, notifications, threading."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from dataclasses import asdict, replace
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any, cast

import pytest

from gateway.delivery.queue import LocalQueue
from gateway.delivery.spool import SCHEMA_VERSION, Spool
from gateway.errors import SpoolFullError
from gateway.frontdoor.smtp import SmtpServer
from gateway.replies import Replies
from gateway.sandbox.emulator import EmulatorServer
from gateway.sandbox.s3server import EmbeddedS3
from gateway.service.gateway import Gateway
from gateway.settings import RouteSettings, Settings

from ..helpers import (
    CREDENTIALS,
    RecordingSink,
    SmtpClient,
    contacts,
    mail,
    make_settings,
    put_faults,
    retry_all_dead,
    spool_settings,
    wait_until,
)

# The spool schema as version 0.1 wrote it, word for word.
SCHEMA_0_1 = """
CREATE TABLE IF NOT EXISTS mail (
    id TEXT PRIMARY KEY,
    received_at REAL NOT NULL,
    sender TEXT NOT NULL,
    recipients TEXT NOT NULL,
    message_id TEXT,
    size INTEGER NOT NULL,
    raw BLOB,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    notice TEXT
);
CREATE INDEX IF NOT EXISTS mail_due ON mail (state, next_attempt_at);
CREATE TABLE IF NOT EXISTS target (
    mail_id TEXT NOT NULL REFERENCES mail (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    route TEXT NOT NULL,
    destination TEXT NOT NULL,
    tag TEXT,
    recipients TEXT NOT NULL,
    request TEXT,
    built_at REAL,
    contact_id TEXT,
    state TEXT NOT NULL,
    error TEXT,
    reply TEXT,
    PRIMARY KEY (mail_id, position)
);
CREATE TABLE IF NOT EXISTS thread (
    instance_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    contact_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (instance_id, message_id)
);
CREATE INDEX IF NOT EXISTS thread_age ON thread (created_at);
"""


@pytest.fixture
def spooled(
    emulator: EmulatorServer,
    s3_server: EmbeddedS3,
    bucket: str,
    tmp_path: Path,
    smarthost: tuple[SmtpServer, RecordingSink],
) -> Settings:
    queue = spool_settings(tmp_path / "spool", smarthost=("127.0.0.1", smarthost[0].port))
    return make_settings(emulator, s3_server, bucket, queue=queue)


async def test_mail_is_queued_then_delivered(spooled: Settings, emulator: EmulatorServer) -> None:
    async with Gateway(spooled, CREDENTIALS) as gateway:
        code, text = await SmtpClient(gateway.smtp_port).send(mail())
        assert code == 250
        assert text.startswith("2.0.0 Queued as ")
        queue_id = text.rsplit(" ", 1)[1]
        await wait_until(lambda: len(contacts(emulator)) == 1)
        spool = Spool(spooled.queue.path, create=False)
        await wait_until(lambda: spool.get(queue_id).state == "done")  # type: ignore[union-attr]
        done = spool.get(queue_id, with_content=True)
    assert done is not None and done.content is None
    assert done.targets[0].contact_id == contacts(emulator)[0].contact_id


async def test_transient_failures_are_retried_and_the_request_is_resent_unchanged(
    spooled: Settings, emulator: EmulatorServer
) -> None:
    await put_faults(emulator, error_rate=1.0)
    async with Gateway(spooled, CREDENTIALS) as gateway:
        code, _ = await SmtpClient(gateway.smtp_port).send(mail())
        assert code == 250
        await wait_until(lambda: len(emulator.connect.calls) >= 4)
        await put_faults(emulator, error_rate=0.0)
        await wait_until(lambda: any(c["Status"] == 200 for c in emulator.connect.calls))
    bodies = {json.dumps(c["Request"], sort_keys=True) for c in emulator.connect.calls}
    assert len(bodies) == 1  # every attempt sent the very same request
    assert len(contacts(emulator)) == 1


async def test_permanent_refusal_goes_to_dead_letters_with_a_notification_and_can_be_retried(
    spooled: Settings, emulator: EmulatorServer, smarthost: tuple[SmtpServer, RecordingSink], tmp_path: Path
) -> None:
    emulator.connect.addresses = ("*@elsewhere.example",)  # support@example.com is not an address of it
    async with Gateway(spooled, CREDENTIALS) as gateway:
        _, text = await SmtpClient(gateway.smtp_port).send(mail())
        queue_id = text.rsplit(" ", 1)[1]
        spool = Spool(spooled.queue.path, create=False)
        await wait_until(lambda: spool.get(queue_id).notice == "sent")  # type: ignore[union-attr]
        dead = spool.get(queue_id)
        assert dead is not None and dead.state == "dead"
        assert "is not an email address of instance" in (dead.last_error or "")
        [notification] = smarthost[1].mails
        assert notification.sender == ""  # never bounces back
        assert notification.recipients == ("customer@client.test",)
        report = message_from_bytes(notification.content.read())
        assert report.get_content_type() == "multipart/report"
        assert report.get_param("report-type") == "delivery-status"
        human, status, *_ = cast("list[Message]", report.get_payload())
        assert status.get_content_type() == "message/delivery-status"
        text_status = status.as_string()
        assert "Final-Recipient: rfc822; support@example.com" in text_status
        assert "Status: 5.6.0" in text_status
        assert "instance" not in cast(bytes, human.get_payload(decode=True)).decode()  # no internals
        emulator.connect.addresses = ("*@example.com",)
        out = await retry_all_dead(spooled.queue.path, tmp_path)
        assert out.startswith("1 mail(s) queued again")
        await wait_until(lambda: len(contacts(emulator)) == 1)


async def test_null_sender_gets_no_notification(
    spooled: Settings, emulator: EmulatorServer, smarthost: tuple[SmtpServer, RecordingSink]
) -> None:
    emulator.connect.addresses = ("*@elsewhere.example",)
    async with Gateway(spooled, CREDENTIALS) as gateway:
        _, text = await SmtpClient(gateway.smtp_port).send(mail(), sender="")
        spool = Spool(spooled.queue.path, create=False)
        queue_id = text.rsplit(" ", 1)[1]
        await wait_until(lambda: (spool.get(queue_id).notice or "").startswith("not needed"))  # type: ignore[union-attr]
    assert smarthost[1].mails == []


async def test_without_smarthost_the_missing_notification_is_recorded(
    spooled: Settings, emulator: EmulatorServer
) -> None:
    emulator.connect.addresses = ("*@elsewhere.example",)
    settings = replace(spooled, queue=replace(spooled.queue, smarthost=None))
    async with Gateway(settings, CREDENTIALS) as gateway:
        _, text = await SmtpClient(gateway.smtp_port).send(mail())
        spool = Spool(settings.queue.path, create=False)
        queue_id = text.rsplit(" ", 1)[1]
        await wait_until(lambda: spool.get(queue_id).notice == "unsent: no smarthost")  # type: ignore[union-attr]


async def test_expired_mail_is_given_up(
    spooled: Settings, emulator: EmulatorServer, smarthost: tuple[SmtpServer, RecordingSink]
) -> None:
    await put_faults(emulator, error_rate=1.0)
    settings = replace(spooled, queue=replace(spooled.queue, max_age=0.3))
    async with Gateway(settings, CREDENTIALS) as gateway:
        _, text = await SmtpClient(gateway.smtp_port).send(mail())
        spool = Spool(settings.queue.path, create=False)
        queue_id = text.rsplit(" ", 1)[1]
        await wait_until(lambda: spool.get(queue_id).notice == "sent")  # type: ignore[union-attr]
        dead = spool.get(queue_id)
    assert dead is not None and dead.last_error is not None and dead.last_error.startswith("gave up after")
    assert "Status: 5.4.7" in smarthost[1].mails[0].content.read().decode()


async def test_no_room_on_disk_is_a_452(spooled: Settings, emulator: EmulatorServer) -> None:
    settings = replace(spooled, queue=replace(spooled.queue, min_free_disk=1 << 60))
    async with Gateway(settings, CREDENTIALS) as gateway:
        client = SmtpClient(gateway.smtp_port)
        replies = await client.commands("MAIL FROM:<a@client.test> SIZE=1000")
        assert replies[0][0] == 452
        assert replies[0][1].startswith("4.3.1")
        code, text = await client.send(mail())
    assert (code, text.split(" ")[0]) == (452, "4.3.1")
    assert contacts(emulator) == []


async def test_a_reply_is_threaded_to_the_contact_of_the_mail_it_answers(
    spooled: Settings, emulator: EmulatorServer
) -> None:
    async with Gateway(spooled, CREDENTIALS) as gateway:
        client = SmtpClient(gateway.smtp_port)
        await client.send(mail("<first@client.test>"))
        await wait_until(lambda: len(contacts(emulator)) == 1)
        first = contacts(emulator)[0].contact_id
        await client.send(mail("<second@client.test>", In_Reply_To="<first@client.test>"))
        await wait_until(lambda: len(contacts(emulator)) == 2)
    second = contacts(emulator)[1]
    assert second.request["RelatedContactId"] == first


async def test_shutdown_leaves_unfinished_mail_queued_and_restart_delivers_it_once(
    spooled: Settings, emulator: EmulatorServer
) -> None:
    await put_faults(emulator, latency_ms=1500)
    settings = replace(spooled, queue=replace(spooled.queue, shutdown_grace=0.2))
    async with Gateway(settings, CREDENTIALS) as gateway:
        _, text = await SmtpClient(gateway.smtp_port).send(mail())
        await wait_until(lambda: len(emulator.connect.calls) == 0 and bool(gateway.queue))
        await asyncio.sleep(0.5)  # the call is under way, waiting for the slow emulator
    spool = Spool(settings.queue.path, create=False)
    queue_id = text.rsplit(" ", 1)[1]
    assert spool.get(queue_id).state == "queued"  # type: ignore[union-attr]
    await put_faults(emulator, latency_ms=0)
    async with Gateway(settings, CREDENTIALS):
        await wait_until(lambda: spool.get(queue_id).state == "done")  # type: ignore[union-attr]
    assert len(contacts(emulator)) == 1


async def test_two_gateways_cannot_share_a_spool(spooled: Settings) -> None:
    from gateway.errors import ConfigError

    async with Gateway(spooled, CREDENTIALS):
        with pytest.raises(ConfigError, match="in use by another running gateway"):
            async with Gateway(spooled, CREDENTIALS):
                pass


async def test_s3_faults_from_the_emulator_are_retried(
    spooled: Settings, emulator: EmulatorServer, s3_server: EmbeddedS3
) -> None:
    emulator.s3 = s3_server
    try:
        await put_faults(emulator, s3_error_rate=1.0)
        async with Gateway(spooled, CREDENTIALS) as gateway:
            _, text = await SmtpClient(gateway.smtp_port).send(mail())
            spool = Spool(spooled.queue.path, create=False)
            queue_id = text.rsplit(" ", 1)[1]
            await wait_until(lambda: "SlowDown" in (spool.get(queue_id).last_error or ""))  # type: ignore[union-attr]
            assert contacts(emulator) == []
            await put_faults(emulator, s3_error_rate=0.0)
            await wait_until(lambda: len(contacts(emulator)) == 1)
    finally:
        s3_server.error_rate = 0.0


SPOOL_WRITES = frozenset(
    {"claim", "defer", "save_request", "delivered", "failed", "release", "bury", "finish", "set_notice",
     "put_many", "put", "purge"}
)  # fmt: skip


class FullDisk:
    """The spool's disk when full: while ``full`` is set, every write raises what the spool raises then,
    at the spool's one door to its thread."""

    def __init__(self) -> None:
        self.full = False
        self.refused = 0


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> FullDisk:
    disk = FullDisk()
    real = LocalQueue._call

    async def call(queue: LocalQueue, method: Any, *args: Any, **kwargs: Any) -> Any:
        if disk.full and method.__name__ in SPOOL_WRITES:
            disk.refused += 1
            raise SpoolFullError("the spool's disk is full: database or disk is full")
        return await real(queue, method, *args, **kwargs)

    monkeypatch.setattr(LocalQueue, "_call", call)
    return disk


async def test_workers_survive_a_full_disk_and_deliver_once_it_clears(
    spooled: Settings, emulator: EmulatorServer, full_disk: FullDisk
) -> None:
    await put_faults(emulator, error_rate=1.0)
    async with Gateway(spooled, CREDENTIALS) as gateway:
        client = SmtpClient(gateway.smtp_port)
        for number in range(3):
            code, _ = await client.send(mail(f"<full-{number}@client.test>"))
            assert code == 250
        await wait_until(lambda: len(emulator.connect.calls) >= 3)  # deliveries fail and are deferred
        full_disk.full = True
        await wait_until(lambda: full_disk.refused >= 6)  # claims and deferrals refused for a while
        full_disk.full = False
        await put_faults(emulator, error_rate=0.0)
        await wait_until(lambda: len(contacts(emulator)) == 3, seconds=20)
        assert gateway.metrics.worker_errors._value.get() > 0


async def test_a_spool_written_by_version_0_1_opens_and_delivers(
    spooled: Settings, emulator: EmulatorServer, smarthost: tuple[SmtpServer, RecordingSink]
) -> None:
    """0.1's spool had no schema version and kept a refused target's reply as one string: opened by this
    version it is migrated, its queued mail delivered, its dead mail's notification readable."""
    path = spooled.queue.path
    path.mkdir(parents=True)
    with sqlite3.connect(path / "spool.sqlite3") as db:
        db.executescript(SCHEMA_0_1)
        route = json.dumps(asdict(RouteSettings(match="support@example.com", instance_id="instance-1")))
        for queue_id, state in (("q-queued", "queued"), ("q-dead", "dead")):
            raw = mail(f"<{queue_id}@client.test>")
            db.execute(
                "INSERT INTO mail (id, received_at, sender, recipients, message_id, size, raw, state,"
                " next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (queue_id, time.time(), "customer@client.test", '["support@example.com"]', None, len(raw),
                 raw, state, 0.0),
            )  # fmt: skip
            db.execute(
                "INSERT INTO target (mail_id, position, route, destination, tag, recipients, state, error,"
                " reply) VALUES (?, 0, ?, 'support@example.com', NULL, '[\"support@example.com\"]', ?, ?, ?)",
                (queue_id, route, "failed" if state == "dead" else "pending",
                 "connect: InvalidRequestException: no" if state == "dead" else None,
                 "554 5.6.0 Amazon Connect refused this message" if state == "dead" else None),
            )  # fmt: skip
    async with Gateway(spooled, CREDENTIALS):
        await wait_until(lambda: len(contacts(emulator)) == 1)
    spool = Spool(path, create=False)
    delivered, dead = spool.get("q-queued"), spool.get("q-dead")
    assert delivered is not None and delivered.state == "done"
    assert dead is not None and dead.targets[0].reply == Replies.REFUSED_BY_CONNECT
    assert dead.targets[0].error == "connect: InvalidRequestException: no"
    with sqlite3.connect(path / "spool.sqlite3") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
