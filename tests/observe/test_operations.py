"""What an operator sees: ``/metrics``, ``/healthz``, ``/readyz`` and one log line per mail."""

from __future__ import annotations

import json
import logging
import smtplib
from dataclasses import replace
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.errors import MisconfiguredError, PermanentError
from gateway.frontdoor.smtp import SmtpServer
from gateway.mail import ReceivedMail
from gateway.message.automatic import LOOP_HEADER
from gateway.observe import mail_log
from gateway.observe.mail_log import JsonFormatter, TextFormatter, log_mail
from gateway.replies import Replies, Reply
from gateway.sandbox.emulator import EmulatedConnect, EmulatorServer
from gateway.sandbox.run import sandbox_route
from gateway.sandbox.s3server import EmbeddedS3
from gateway.service.gateway import Gateway
from gateway.settings import Settings

from ..helpers import (
    CREDENTIALS,
    RecordingSink,
    SmtpClient,
    contacts,
    mail,
    make_door,
    make_settings,
    put_faults,
    spool_settings,
    wait_until,
)
from ..helpers import (
    http_get as get,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(gateway: Gateway) -> Samples:
    assert gateway.http is not None
    status, text = await get(gateway.http.port, "/metrics")
    assert status == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def mail_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The per-mail lines, as the JSON formatter writes them."""
    formatter = JsonFormatter()
    return [json.loads(formatter.format(r)) for r in caplog.records if r.name == "gateway.mail"]


@pytest.fixture
def spooled(emulator: EmulatorServer, s3_server: EmbeddedS3, bucket: str, tmp_path: Path) -> Settings:
    return make_settings(emulator, s3_server, bucket, queue=spool_settings(tmp_path / "spool"))


async def test_metrics_and_log_lines_match_what_was_sent(
    spooled: Settings, emulator: EmulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.mail")
    async with Gateway(spooled, CREDENTIALS) as gateway:
        client = SmtpClient(gateway.smtp_port)
        for n in range(3):
            assert (await client.send(mail(f"<m{n}@client.test>")))[0] == 250
        two = ("support@example.com", "desk@help.example.com")
        assert (await client.send(mail("<m3@client.test>"), recipients=two))[0] == 250
        looped = mail("<loop@client.test>", **{LOOP_HEADER.replace("-", "_"): "mx.gateway.test"})
        assert (await client.send(looped))[0] == 554
        assert (await client.send(mail(), recipients=("nobody@example.com",)))[0] == 550
        await wait_until(lambda: len(contacts(emulator)) == 5)
        await wait_until(lambda: len(mail_lines(caplog)) == 5)
        samples = await scrape(gateway)

    assert value(samples, "mail_gateway_sessions_total") == 6
    assert value(samples, "mail_gateway_mails_received_total") == 5
    assert value(samples, "mail_gateway_mails_accepted_total") == 4
    assert value(samples, "mail_gateway_mails_refused_total", reason="loop") == 1
    assert value(samples, "mail_gateway_mails_refused_total", reason="unknown_recipient") == 1
    assert value(samples, "mail_gateway_contacts_created_total") == 5
    stored = [a for c in contacts(emulator) for a in c.request.get("Attachments", [])]
    assert len({a["S3Url"].split("?")[0] for a in stored}) == 4  # one upload per mail, shared by recipients
    assert value(samples, "mail_gateway_attachments_uploaded_total") == 4
    assert value(samples, "mail_gateway_attachment_bytes_uploaded_total") == 4 * len(b"%PDF")
    assert value(samples, "mail_gateway_queue_mails", state="done") == 4
    assert value(samples, "mail_gateway_queue_mails", state="queued") == 0
    assert value(samples, "mail_gateway_aws_call_seconds_count", service="connect", outcome="ok") == 5
    assert value(samples, "mail_gateway_aws_call_seconds_count", service="s3", outcome="ok") == 4
    assert value(samples, "mail_gateway_delivery_seconds_count") == 4
    assert value(samples, "mail_gateway_configuration_fault", service="connect") == 0
    assert value(samples, "mail_gateway_dead_letters_total") == 0

    lines = mail_lines(caplog)
    delivered = {line["message_id"]: line for line in lines if line["outcome"] == "delivered"}
    assert set(delivered) == {f"<m{n}@client.test>" for n in range(4)}
    assert delivered["<m3@client.test>"]["recipients"] == 2
    assert sorted(c for line in delivered.values() for c in line["contacts"]) == sorted(
        c.contact_id for c in contacts(emulator)
    )
    assert all(line["queue_id"] and line["duration_ms"] >= 0 for line in delivered.values())
    [refused] = [line for line in lines if line["outcome"] == "refused"]
    assert (refused["message_id"], refused["reason"]) == ("<loop@client.test>", "loop")
    text = "\n".join(json.dumps(line) for line in lines)
    assert 'client.test"' not in text and "support@example.com" not in text  # no addresses by default


async def test_a_configuration_fault_raises_its_gauge(
    s3_server: EmbeddedS3, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.mail")
    server = EmulatorServer(EmulatedConnect(instances=["another-instance"]))
    await server.start()
    try:
        async with Gateway(make_settings(server, s3_server, bucket), CREDENTIALS) as gateway:
            code, text = await SmtpClient(gateway.smtp_port).send(mail())
            samples = await scrape(gateway)
    finally:
        await server.stop()
    assert (code, text.split(" ")[0]) == (451, "4.3.5")
    assert value(samples, "mail_gateway_configuration_fault", service="connect") == 1
    assert value(samples, "mail_gateway_configuration_fault", service="s3") == 0
    assert value(samples, "mail_gateway_mails_refused_total", reason="misconfigured") == 1
    assert value(samples, "mail_gateway_contacts_created_total") == 0
    [line] = mail_lines(caplog)
    assert (line["outcome"], line["reason"], line["contacts"]) == ("deferred", "misconfigured", [])


async def test_healthz_is_alive_and_readyz_follows_aws_in_sync_mode(
    settings: Settings, emulator: EmulatorServer
) -> None:
    async with Gateway(settings, CREDENTIALS) as gateway:
        assert gateway.http is not None
        port = gateway.http.port
        assert await get(port, "/healthz") == (200, json.dumps({"status": "alive"}))
        assert (await get(port, "/readyz"))[0] == 200
        await put_faults(emulator, error_rate=1.0)
        assert (await SmtpClient(gateway.smtp_port).send(mail()))[0] == 451
        status, body = await get(port, "/readyz")
        assert status == 503 and "AWS" in json.loads(body)["reason"]
        assert (await get(port, "/healthz"))[0] == 200
        await put_faults(emulator, error_rate=0.0)
        assert (await SmtpClient(gateway.smtp_port).send(mail()))[0] == 250
        assert (await get(port, "/readyz"))[0] == 200


async def test_in_spool_mode_a_connect_outage_keeps_the_gateway_ready(
    spooled: Settings, emulator: EmulatorServer
) -> None:
    await put_faults(emulator, error_rate=1.0)
    async with Gateway(spooled, CREDENTIALS) as gateway:
        assert gateway.http is not None
        assert (await SmtpClient(gateway.smtp_port).send(mail()))[0] == 250
        await wait_until(lambda: gateway.metrics.last_aws_failure is not None)
        assert (await get(gateway.http.port, "/readyz"))[0] == 200
        samples = await scrape(gateway)
        assert value(samples, "mail_gateway_delivery_retries_total") >= 1
        await put_faults(emulator, error_rate=0.0)
        await wait_until(lambda: len(contacts(emulator)) == 1)


async def test_a_full_spool_disk_is_not_ready(spooled: Settings) -> None:
    full = replace(spooled, queue=replace(spooled.queue, min_free_disk=2**62))
    async with Gateway(full, CREDENTIALS) as gateway:
        assert gateway.http is not None
        status, body = await get(gateway.http.port, "/readyz")
        assert status == 503 and "min_free_disk" in json.loads(body)["reason"]
        code, _ = await SmtpClient(gateway.smtp_port).send(mail())
        assert code == 452


async def test_a_mail_cut_short_at_data_still_gets_its_line(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.mail")
    small = replace(settings, smtp=replace(settings.smtp, max_message_size=1000))
    async with Gateway(small, CREDENTIALS) as gateway:
        message = EmailMessage()
        message["Subject"] = "big"
        message.set_content("x" * 5000)

        def send(client: smtplib.SMTP) -> int:
            client.ehlo("client.test")
            client.mail("customer@client.test")
            client.rcpt("support@example.com")
            return client.data(message.as_bytes())[0]

        assert await SmtpClient(gateway.smtp_port).run(send) == 552
    [line] = mail_lines(caplog)
    assert (line["outcome"], line["reason"], line["recipients"]) == ("refused", "too_big", 1)


def test_personal_data_only_when_the_operator_allows_it(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.mail")
    personal = {"sender": "kunde@client.test", "to": ["support@example.com"]}
    log_mail(outcome="delivered", queue_id="q1", message_id="<a@b>", recipients=1, personal=personal)
    monkeypatch.setattr(mail_log, "_personal_data", True)
    log_mail(outcome="delivered", queue_id="q2", message_id="<c@d>", recipients=1, personal=personal)
    hidden, shown = mail_lines(caplog)
    assert "sender" not in hidden and "to" not in hidden
    assert (shown["sender"], shown["to"]) == ("kunde@client.test", ["support@example.com"])
    text = TextFormatter().format(caplog.records[0])
    assert text.endswith("mail delivered queue_id=q1 message_id=<a@b> recipients=1 contacts=[]")


def test_error_texts_leave_the_log_without_their_echoed_values(monkeypatch: pytest.MonkeyPatch) -> None:
    error = PermanentError(
        "Value 'kunde@client.test' at 'fromEmailAddress' failed",
        service="connect",
        code="InvalidRequestException",
    )
    detail = "connect: InvalidRequestException: Value 'kunde@client.test' at 'fromEmailAddress' failed"
    assert str(error) == detail
    assert mail_log.loggable(str(error), error.summary) == "connect: InvalidRequestException"
    too_long = MisconfiguredError("a presigned URL has 2100 characters", service="s3")
    assert mail_log.loggable(str(too_long), too_long.summary) == "s3"
    monkeypatch.setattr(mail_log, "_personal_data", True)
    assert mail_log.loggable(str(error), error.summary) == detail


async def test_a_dead_letter_is_logged_by_its_error_class_and_kept_whole_in_the_spool(
    s3_server: EmbeddedS3, bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server = EmulatorServer(EmulatedConnect(addresses=["elsewhere@example.com"]))
    await server.start()
    try:
        settings = make_settings(server, s3_server, bucket, queue=spool_settings(tmp_path / "spool"))
        async with Gateway(settings, CREDENTIALS) as gateway:
            code, text = await SmtpClient(gateway.smtp_port).send(mail("<dead-1@client.test>"))
            assert code == 250
            await wait_until(lambda: any(line["outcome"] == "dead" for line in mail_lines(caplog)))
            assert gateway.queue is not None
            dead = await gateway.queue.get(text.rsplit(" ", 1)[1])
    finally:
        await server.stop()
    [line] = mail_lines(caplog)
    assert line["reason"] == "connect: InvalidRequestException"
    assert dead is not None and dead.state == "dead"
    assert "support@example.com" in (dead.last_error or "")  # the whole text waits in the spool
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("gateway"))
    assert "InvalidRequestException" in logged
    assert "is not an email address of instance" not in logged  # Connect's message, which echoes values


class FailingParking(RecordingSink):
    async def park(self, mail: ReceivedMail) -> Reply:
        return Replies.LOCAL_ERROR


async def test_a_mail_that_could_not_be_parked_is_logged_deferred(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.mail")
    server = SmtpServer(make_door(FailingParking(), [sandbox_route()], automatic_policy="drop"))
    await server.start()
    try:
        automatic = mail("<ooo@client.test>", Auto_Submitted="auto-replied")
        code, _ = await SmtpClient(server.port).send(automatic)
    finally:
        await server.stop()
    assert code == 451
    [line] = mail_lines(caplog)
    assert (line["outcome"], line["reason"]) == ("deferred", "local_error")
