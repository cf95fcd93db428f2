"""What tests share besides fixtures: real servers' settings, clients that speak the real protocols,
waiting without sleeping blindly, free ports, and one mail factory."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from email.message import EmailMessage
from pathlib import Path
from typing import Any, NoReturn

import aiohttp
import pytest

from gateway.aws.clients import StaticCredentials
from gateway.contact.routing import Router
from gateway.frontdoor.admission import Admission
from gateway.frontdoor.smtp import FrontDoor
from gateway.mail import InMemoryWriter, MailWriter, ReceivedMail
from gateway.replies import Replies, Reply
from gateway.sandbox.emulator import EmulatorServer
from gateway.sandbox.s3server import SANDBOX_KEY, EmbeddedS3
from gateway.settings import (
    AccessSettings,
    AttachmentSettings,
    AuthSettings,
    AwsSettings,
    HttpSettings,
    LimitSettings,
    QueueMode,
    QueueSettings,
    RouteSettings,
    Settings,
    SmtpSettings,
)

ROOT = Path(__file__).resolve().parent.parent
# The public corpus of real-world mail is read in place, never copied here: .ci/run points this at
# ../shared/corpus.
CORPUS_VARIABLE = "MAIL_GATEWAY_CORPUS"
CORPUS = Path(os.environ[CORPUS_VARIABLE]) if os.environ.get(CORPUS_VARIABLE) else None
CREDENTIALS = StaticCredentials(SANDBOX_KEY, SANDBOX_KEY)
IN_CI = os.environ.get("CI") == "true"


def unavailable(reason: str) -> NoReturn:
    """A real component (Postfix, Chromium, the corpus) is missing: skip, except under CI, where it is a
    failure."""
    if IN_CI:
        pytest.fail(f"{reason}: under CI it must be there")
    pytest.skip(reason)


def free_port() -> int:
    """A loopback port free right now, for a child process that must be told its port in advance."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def wait_until(condition: Callable[[], Any], seconds: float = 10.0, interval: float = 0.02) -> Any:
    """Poll ``condition`` (without blocking the loop) until it is true; its value. Fails after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


def eventually(condition: Callable[[], Any], seconds: float = 15.0, interval: float = 0.05) -> Any:
    """The same, for synchronous tests (a browser, a child process); an exception counts as "not yet"
    until the deadline (a page redrawing, a server still starting)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            result = condition()
            if result:
                return result
        except Exception:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


def open_page(driver: Any, url: str) -> None:
    """``get``, then wait for the page's own scripts: chromedriver can return from ``get`` before
    ``DOMContentLoaded`` has run (seen about once in six runs)."""
    driver.get(url)
    eventually(lambda: driver.execute_script("return document.readyState") == "complete")


def make_mail(
    *,
    sender: str = "customer@client.test",
    to: str = "support@example.com",
    subject: str = "Hello",
    message_id: str | None = None,
    text: str = "hello",
    html: str | None = None,
    attachments: Sequence[tuple[str, str, bytes]] = (),
    headers: Mapping[str, str] | None = None,
) -> EmailMessage:
    """A mail as a mail client writes it: text (and HTML), then each ``(file name, type, bytes)``."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    if message_id is not None:
        message["Message-ID"] = message_id
    for name, value in (headers or {}).items():
        message[name] = value
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    for filename, content_type, data in attachments:
        maintype, _, subtype = content_type.partition("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return message


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
        queue=queue or QueueSettings(mode=QueueMode.SYNC),
        http=HttpSettings(listen=("127.0.0.1", 0)),
    )


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


class RecordingSink:
    """A sink that keeps what the front door hands over, parked mail apart. It answers ``reply`` when
    given, else ``Queued as q<n>``; with a catch-all route it is also a smarthost that captures DSNs."""

    def __init__(self, reply: Reply | None = None) -> None:
        self.reply = reply
        self.mails: list[ReceivedMail] = []
        self.parked: list[ReceivedMail] = []

    def writer(self) -> MailWriter:
        return InMemoryWriter()

    def room_for(self, size: int) -> Reply | None:
        return None

    async def accept(self, mail: ReceivedMail) -> Reply:
        self.mails.append(mail)
        return self.reply or Replies.QUEUED.format(queue_id=f"q{len(self.mails)}")

    async def park(self, mail: ReceivedMail) -> Reply:
        self.parked.append(mail)
        return Replies.PARKED.format(queue_id=f"p{len(self.parked)}")


def spool_settings(path: Path, **changes: Any) -> QueueSettings:
    values: dict[str, Any] = {
        "mode": QueueMode.SPOOL,
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
    """The spool tests' mail: a text and a small PDF; ``In_Reply_To="<id>"`` adds that header."""
    return make_mail(
        subject="Spooled",
        message_id=message_id,
        attachments=[("a.pdf", "application/pdf", b"%PDF")],
        headers={name.replace("_", "-"): value for name, value in headers.items()},
    ).as_bytes()


def contacts(emulator: EmulatorServer) -> list[Any]:
    return list(emulator.connect.contacts.values())


async def http_get(port: int, path: str) -> tuple[int, str]:
    """Status and text of a GET on a loopback port."""
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}{path}") as response:
        return response.status, await response.text()


async def put_faults(emulator: EmulatorServer, **faults: float) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.put(f"{emulator.url}/_emulator/faults", json=faults) as r,
    ):
        assert r.status == 200, await r.text()


class Sandbox:
    def __init__(self, process: subprocess.Popen[str], smtp_port: int, http_port: int, started: str) -> None:
        self.process = process
        self.smtp_port = smtp_port
        self.http_port = http_port
        self.started = started  # what it printed up to "Ready"

    def next_line(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline()


@contextmanager
def running_sandbox(*options: str, cwd: Path = ROOT) -> Iterator[Sandbox]:
    """``mail-gateway sandbox`` as a user runs it, on free ports; stopped with SIGTERM at the end."""
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "sandbox", "--smtp-port", "0", "--http-port", "0", *options],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=cwd,
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("Ready"):
            break
    text = "".join(lines)
    smtp = re.search(r"SMTP\s+127\.0\.0\.1:(\d+)", text)
    http = re.search(r"Connect\s+http://127\.0\.0\.1:(\d+)", text)
    try:
        assert smtp is not None and http is not None, text
        yield Sandbox(process, int(smtp.group(1)), int(http.group(1)), text)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert process.returncode == 0


class Session:
    """A raw SMTP client on asyncio streams: it can misbehave in ways smtplib will not."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(
        cls, port: int, source: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None
    ) -> Session:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1",
            port,
            local_addr=(source, 0),
            ssl=ssl_context,
            server_hostname="localhost" if ssl_context else None,
        )
        return cls(reader, writer)

    async def reply(self, seconds: float = 10) -> str:
        """One whole reply (the last line of a multi-line one), or "" when the server hung up."""
        while True:
            line = await asyncio.wait_for(self.reader.readline(), seconds)
            if not line:
                return ""
            text = line.decode().rstrip("\r\n")
            if len(text) < 4 or text[3] != "-":
                return text

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def command(self, line: str | bytes) -> str:
        await self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return await self.reply()

    async def closed(self, seconds: float = 10) -> bool:
        return await asyncio.wait_for(self.reader.read(), seconds) == b""

    def close(self) -> None:
        self.writer.close()


def numbered_mail(number: int, tag: str, attachment_bytes: int = 256) -> bytes:
    """Mail number ``number`` of a load test: its own sender, Message-ID ``<tag-number@client.test>`` and a
    random attachment (so that no two mails share their files)."""
    return make_mail(
        sender=f"customer{number}@client.test",
        subject=f"Mail number {number}",
        message_id=f"<{tag}-{number}@client.test>",
        text=f"body {number}",
        attachments=[(f"{number}.pdf", "application/pdf", os.urandom(attachment_bytes))],
    ).as_bytes()


def send_until_accepted(
    ports: Sequence[int],
    number: int,
    raw: bytes,
    timeout: float = 15,
    stop: threading.Event | None = None,
) -> int:
    """An MTA's behaviour: the same bytes again until a 250 (or until ``stop``: the test ends), to the next
    of its MX hosts (``ports``) after any failure; how many tries it took."""
    tries = 0
    while stop is None or not stop.is_set():
        port = ports[(number + tries) % len(ports)]
        tries += 1
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=timeout) as client:
                client.sendmail(f"customer{number}@client.test", ["support@example.com"], raw)
            return tries
        except smtplib.SMTPResponseException as error:
            if error.smtp_code >= 500:  # an MTA gives up on a 5xx: the gateway must never answer one here
                raise
            time.sleep(0.05)
        except (OSError, smtplib.SMTPException):
            time.sleep(0.05)
    raise AssertionError(f"mail {number} was never accepted")
