"""Shared fixtures: real servers on loopback ports bound to 0, and an SMTP client speaking over a socket."""

from __future__ import annotations

import asyncio
import os
import smtplib
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import replace
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from gateway.aws.clients import StaticCredentials
from gateway.contact.routing import Router
from gateway.frontdoor.admission import Admission
from gateway.frontdoor.smtp import FrontDoor, SmtpServer
from gateway.mail import ReceivedMail
from gateway.replies import Replies, Reply
from gateway.sandbox.emulator import EmulatedConnect, EmulatorServer
from gateway.sandbox.s3server import SANDBOX_KEY, EmbeddedS3
from gateway.service.gateway import Gateway
from gateway.settings import (
    AccessSettings,
    AttachmentSettings,
    AuthSettings,
    AwsSettings,
    HttpSettings,
    LimitSettings,
    QueueSettings,
    RouteSettings,
    Settings,
    SmtpSettings,
)

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus"
CREDENTIALS = StaticCredentials(SANDBOX_KEY, SANDBOX_KEY)


@pytest.fixture(autouse=True)
def _no_real_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never reach for a developer's real AWS account or configuration."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[EmbeddedS3]:
    server = EmbeddedS3().start()
    yield server
    server.stop()


@pytest.fixture
def bucket(s3_server: EmbeddedS3) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(name)
    return name


@pytest.fixture
async def emulator() -> AsyncIterator[EmulatorServer]:
    server = EmulatorServer(EmulatedConnect())
    await server.start()
    yield server
    await server.stop()


def make_door(
    sink: Any,
    routes: Sequence[RouteSettings],
    smtp: SmtpSettings | None = None,
    limits: LimitSettings | None = None,
    access: AccessSettings | None = None,
    auth: AuthSettings | None = None,
    **options: Any,
) -> FrontDoor:
    """A front door on a free loopback port with the given policy, for tests of the SMTP layer alone."""
    limits = limits or LimitSettings()
    return FrontDoor(
        smtp=smtp or SmtpSettings(host="127.0.0.1", port=0, hostname="mx.gateway.test"),
        limits=limits,
        router=Router(routes),
        sink=sink,
        admission=Admission(access or AccessSettings(), limits, auth or AuthSettings()),
        **options,
    )


def make_settings(
    emulator: EmulatorServer,
    s3: EmbeddedS3,
    bucket: str,
    routes: Sequence[RouteSettings] = (),
    queue: QueueSettings | None = None,
    **smtp: Any,
) -> Settings:
    """Settings for a gateway against the test servers; ``sync`` mode unless a queue is given."""
    return Settings(
        smtp=SmtpSettings(host="127.0.0.1", port=0, hostname="mx.gateway.test", **smtp),
        aws=AwsSettings(region="us-east-1", connect_endpoint_url=emulator.url, s3_endpoint_url=s3.url),
        attachments=AttachmentSettings(bucket=bucket, prefix="inbound/"),
        routes=tuple(routes)
        or (
            RouteSettings(match="support@example.com", instance_id="instance-1"),
            RouteSettings(
                match="*@help.example.com", instance_id="instance-2", destination="help@example.com"
            ),
        ),
        queue=queue or QueueSettings(mode="sync"),
        http=HttpSettings(listen=("127.0.0.1", 0)),
    )


@pytest.fixture
def settings(emulator: EmulatorServer, s3_server: EmbeddedS3, bucket: str) -> Settings:
    return make_settings(emulator, s3_server, bucket)


@pytest.fixture
async def gateway(settings: Settings) -> AsyncIterator[Gateway]:
    async with Gateway(settings, CREDENTIALS) as running:
        yield running


def with_smtp(settings: Settings, **changes: Any) -> Settings:
    return replace(settings, smtp=replace(settings.smtp, **changes))


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class SmtpClient:
    """stdlib ``smtplib`` in a worker thread, so that the server can run in the test's event loop."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def run(self, action: Callable[[smtplib.SMTP], Any]) -> Any:
        def session() -> Any:
            with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as client:
                return action(client)

        return await asyncio.to_thread(session)

    async def send(
        self,
        raw: bytes,
        sender: str = "customer@client.test",
        recipients: Sequence[str] = ("support@example.com",),
    ) -> tuple[int, str]:
        """Send one mail; the reply to DATA (or the first refusal) as (code, text)."""

        def deliver(client: smtplib.SMTP) -> tuple[int, str]:
            client.ehlo("client.test")
            code, text = client.mail(sender)
            if code != 250:
                return code, text.decode()
            for recipient in recipients:
                code, text = client.rcpt(recipient)
                if code != 250:
                    return code, text.decode()
            code, text = client.data(raw)
            return code, text.decode()

        result: tuple[int, str] = await self.run(deliver)
        return result

    async def commands(self, *lines: str) -> list[tuple[int, str]]:
        """Send raw command lines after EHLO; the reply to each."""

        def talk(client: smtplib.SMTP) -> list[tuple[int, str]]:
            client.ehlo("client.test")
            replies = []
            for line in lines:
                client.putcmd(line)
                code, text = client.getreply()
                replies.append((code, text.decode()))
            return replies

        result: list[tuple[int, str]] = await self.run(talk)
        return result


@pytest.fixture
def smtp(gateway: Gateway) -> SmtpClient:
    return SmtpClient(gateway.smtp_port)


async def wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


class RecordingSink:
    """A sink that keeps what the front door hands over, parked mail apart. It answers ``reply`` when
    given, else ``Queued as q<n>``; with a catch-all route it is also a smarthost that captures DSNs."""

    def __init__(self, reply: Reply | None = None) -> None:
        self.reply = reply
        self.mails: list[ReceivedMail] = []
        self.parked: list[ReceivedMail] = []

    def room_for(self, size: int) -> Reply | None:
        return None

    async def accept(self, mail: ReceivedMail) -> Reply:
        self.mails.append(mail)
        return self.reply or Replies.QUEUED.format(queue_id=f"q{len(self.mails)}")

    async def park(self, mail: ReceivedMail) -> Reply:
        self.parked.append(mail)
        return Replies.PARKED.format(queue_id=f"p{len(self.parked)}")


@pytest.fixture
async def smarthost() -> AsyncIterator[tuple[SmtpServer, RecordingSink]]:
    capture = RecordingSink(Replies.QUEUED.format(queue_id="captured"))
    smarthost_settings = SmtpSettings(host="127.0.0.1", port=0, hostname="smarthost.test")
    server = SmtpServer(make_door(capture, [RouteSettings(match="*", instance_id="x")], smarthost_settings))
    await server.start()
    yield server, capture
    await server.stop()


def spool_settings(path: Path, **changes: Any) -> QueueSettings:
    values: dict[str, Any] = {
        "mode": "spool",
        "path": path,
        "rate_per_second": 50.0,
        "burst": 10,
        "workers": 2,
        "retry_initial": 0.05,
        "retry_max": 0.2,
        "max_age": 60.0,
        "min_free_disk": 0,
        "shutdown_grace": 2.0,
    }
    values.update(changes)
    return QueueSettings(**values)


async def retry_all_dead(spool: Path, directory: Path) -> str:
    """``mail-gateway queue retry --all-dead``, run as an operator runs it beside the gateway; its output."""
    config = directory / "gateway.toml"
    config.write_text(
        f'[attachments]\nbucket = "b-1"\n[queue]\npath = "{spool}"\n'
        '[[routes]]\nmatch = "*"\ninstance_id = "i"\n'
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "queue", "--config", str(config), "retry", "--all-dead",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode == 0, err
    return out.decode()


def mail(message_id: str = "<q1@client.test>", **headers: str) -> bytes:
    message = EmailMessage()
    message["From"] = "customer@client.test"
    message["To"] = "support@example.com"
    message["Subject"] = "Spooled"
    message["Message-ID"] = message_id
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content("hello")
    message.add_attachment(b"%PDF", maintype="application", subtype="pdf", filename="a.pdf")
    return message.as_bytes()


def contacts(emulator: EmulatorServer) -> list[Any]:
    return list(emulator.connect.contacts.values())


async def put_faults(emulator: EmulatorServer, **faults: float) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.put(f"{emulator.url}/_emulator/faults", json=faults) as r,
    ):
        assert r.status == 200, await r.text()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The corpus figures, when the corpus tests ran."""
    from . import test_corpus

    stats = test_corpus.STATS
    if "messages" in stats:
        terminalreporter.write_sep("-", "corpus")
        terminalreporter.write_line(
            f"{stats['messages']} mails: {stats['exceptions']} exceptions, {stats['valid']} requests within "
            f"every constraint of the Connect model, {stats['preserved']} of {stats['attachments']} "
            "attachments byte-for-byte preserved"
        )
    if "parse_command_files" in stats:
        terminalreporter.write_line(
            f"mail-gateway parse: a valid request for {stats['parse_command_files']} files"
        )


# Hypothesis: bounded for CI and daily runs; HYPOTHESIS_PROFILE=thorough for a long search.
hypothesis_settings.register_profile(
    "bounded", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
hypothesis_settings.register_profile("thorough", max_examples=5000, deadline=None)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "bounded"))
