"""The hostile-mail issue's attacks, each a regression test named after it, against the whole gateway (spool
mode, the Connect emulator, the embedded S3) over real sockets.

For the mails, the event loop's worst lag is measured over the whole time the mail is processed (from
the first byte to its end as a refusal, a contact or a dead letter), and another session's NOOP must be
answered within a second meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trustme

from gateway.delivery.spool import MailState, Spool
from gateway.frontdoor.credentials import Credentials
from gateway.frontdoor.tls import server_context
from gateway.replies import Replies
from gateway.sandbox.emulator import EmulatorServer
from gateway.sandbox.s3server import EmbeddedS3
from gateway.service.gateway import Gateway
from gateway.settings import LimitSettings, Settings, TlsSettings, Unreadable

from ..helpers import (
    CREDENTIALS,
    Session,
    contacts,
    make_settings,
    spool_settings,
    wait_until,
)

NOOP_WITHIN_SECONDS = 1.0
ALICE = b"From: alice@customer.test\r\nTo: support@example.com\r\nSubject: attack\r\n"


class LoopLag:
    """The event loop's worst lateness while the block runs: a task that asks to wake every 10 ms."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(0.01)
            self.worst = max(self.worst, loop.time() - asked - 0.01)

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.get_running_loop().create_task(self._watch())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@pytest.fixture
def spooled(emulator: EmulatorServer, s3_server: EmbeddedS3, bucket: str, tmp_path: Path) -> Settings:
    queue = spool_settings(tmp_path / "spool")
    settings = make_settings(emulator, s3_server, bucket, queue=queue, max_message_size=60 * 1024 * 1024)
    return replace(settings, limits=replace(settings.limits, data_timeout=60.0))


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Gateway]:
    async with Gateway(settings, CREDENTIALS) as gateway:
        yield gateway


async def send(port: int, body: bytes, recipient: str = "support@example.com") -> str:
    """One mail over a raw connection (the bytes exactly as given, in 64 KiB writes); the DATA reply."""
    session = await Session.open(port)
    try:
        assert (await session.reply()).startswith("220")
        for line in ("EHLO attacker.test", "MAIL FROM:<attacker@attacker.test>", f"RCPT TO:<{recipient}>"):
            assert (await session.command(line)).startswith("250"), line
        assert (await session.command("DATA")).startswith("354")
        data = body + b"\r\n.\r\n"
        for start in range(0, len(data), 65536):
            await session.send(data[start : start + 65536])
        return await session.reply(seconds=60)
    finally:
        session.close()


async def noop_while(port: int, work: Awaitable[Any]) -> tuple[Any, float]:
    """Run ``work`` while another session sends NOOPs; its result and the slowest NOOP's answer time. (A
    fresh session every 50 NOOPs: past 100 without a mail the gateway would rightly close it.)"""
    task = asyncio.ensure_future(work)
    slowest = 0.0
    while not task.done():
        session = await Session.open(port)
        try:
            assert (await session.reply()).startswith("220")
            assert (await session.command("EHLO bystander.test")).startswith("250")
            for _ in range(50):
                if task.done():
                    break
                started = time.monotonic()
                assert (await session.command("NOOP")).startswith("250")
                slowest = max(slowest, time.monotonic() - started)
                await asyncio.sleep(0.05)
        finally:
            session.close()
    return await task, slowest


async def processed(
    settings: Settings, body: bytes, until: Callable[[Gateway, str], bool], seconds: float = 60
) -> tuple[str, float, float]:
    """The DATA reply, the loop's worst lag and the slowest NOOP, over the mail's whole processing: until
    ``until(gateway, reply)`` says it has ended."""
    async with running(settings) as gateway, LoopLag() as lag:

        async def whole() -> str:
            reply = await send(gateway.smtp_port, body)
            await wait_until(lambda: until(gateway, reply), seconds=seconds)
            return reply

        reply, slowest = await noop_while(gateway.smtp_port, whole())
    return reply, lag.worst, slowest


def refused(gateway: Gateway, reply: str) -> bool:
    return reply[0] in "45"


def one_contact(emulator: EmulatorServer) -> Callable[[Gateway, str], bool]:
    return lambda gateway, reply: len(contacts(emulator)) == 1


def parts(count: int, part: bytes) -> bytes:
    return b"Content-Type: multipart/mixed; boundary=B\r\n" + ALICE + b"\r\n" + part * count + b"--B--\r\n"


def nested(levels: int, line_end: bytes = b"\r\n") -> bytes:
    head, tail = [], []
    for level in range(levels):
        head.append(b"Content-Type: multipart/mixed; boundary=b%d" % level + line_end * 2 + b"--b%d" % level)
        tail.append(b"--b%d--" % level)
    return ALICE + line_end.join(head) + line_end + b"x" + line_end + line_end.join(reversed(tail))


# 900 base64 attachments of 20 KB: seconds of reading, far more than a budget of 0.2 s.
SLOW_TO_READ = parts(
    900,
    b"--B\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + (b"QUJD" * 19 + b"\r\n") * 270,
)


async def test_fifty_thousand_parts_without_content_type_are_refused_at_data(spooled: Settings) -> None:
    """2 MB of parts with no Content-Type once got 250 Queued and then froze the gateway at every start."""
    body = parts(50_000, b"--B\r\nContent-Disposition: attachment\r\n\r\nx\r\n")
    reply, lag, slowest = await processed(spooled, body, refused)
    assert reply == str(Replies.TOO_MANY_PARTS.format(limit=1000))
    assert lag < NOOP_WITHIN_SECONDS and slowest < NOOP_WITHIN_SECONDS


async def test_nine_hundred_ninety_nested_multiparts_are_refused_at_data(spooled: Settings) -> None:
    """990 levels once got 250, then a RecursionError in the parser on every retry, forever."""
    reply, lag, slowest = await processed(spooled, nested(990), refused)
    assert reply == str(Replies.NESTED_TOO_DEEP.format(limit=100))
    assert lag < NOOP_WITHIN_SECONDS and slowest < NOOP_WITHIN_SECONDS


async def test_five_thousand_levels_with_cr_only_line_ends_are_refused_at_data(spooled: Settings) -> None:
    """CR-only line ends are line ends to the parser: nesting counted on them too."""
    lenient = replace(spooled, limits=replace(spooled.limits, max_line_length=1024 * 1024))
    reply, _, _ = await processed(lenient, nested(5000, b"\r"), refused)
    assert reply == str(Replies.NESTED_TOO_DEEP.format(limit=100))


async def test_ten_thousand_alike_attachments_end_as_a_contact_without_stalling(
    spooled: Settings, emulator: EmulatorServer
) -> None:
    """10,000 parts named alike (under a raised part limit) once stalled the loop 19 s: now the mail is
    read in a reader process and the file names are made unique in linear time."""
    lenient = replace(spooled, limits=replace(spooled.limits, max_mime_parts=20_000))
    part = b"--B\r\nContent-Disposition: attachment; filename=same.txt\r\n\r\nx\r\n"
    reply, lag, slowest = await processed(lenient, parts(10_000, part), one_contact(emulator))
    assert reply.startswith("250")
    assert lag < NOOP_WITHIN_SECONDS and slowest < NOOP_WITHIN_SECONDS
    request = contacts(emulator)[0].request
    assert len(request["Attachments"]) == 50  # Connect's most; the rest named in "Not in this contact"
    assert request["Attachments"][1]["FileName"] == "same (2).txt"


async def test_nine_hundred_ninety_inline_text_parts_end_as_a_contact_without_stalling(
    spooled: Settings, emulator: EmulatorServer
) -> None:
    """990 inline text parts of 38 KB once rebuilt the body 990 times (quadratic: a 12 s stall)."""
    text = b"--B\r\nContent-Type: text/plain\r\n\r\n" + (b"x" * 76 + b"\r\n") * 500
    reply, lag, slowest = await processed(spooled, parts(990, text), one_contact(emulator))
    assert reply.startswith("250")
    assert lag < NOOP_WITHIN_SECONDS and slowest < NOOP_WITHIN_SECONDS
    body = contacts(emulator)[0].request["EmailMessage"]["RawMessage"]["Body"]
    assert body.endswith("[The gateway shortened this body to fit Amazon Connect's size limit.]")


async def test_a_mail_that_cannot_be_read_in_time_becomes_a_contact_that_says_so(
    spooled: Settings, emulator: EmulatorServer
) -> None:
    """Poison ends: a mail whose reading runs over its budget is not retried blindly; its contact says it
    could not be read and links the original."""
    hurried = replace(spooled, queue=replace(spooled.queue, read_budget=0.2))
    reply, _, _ = await processed(hurried, SLOW_TO_READ, one_contact(emulator))
    assert reply.startswith("250")
    request = contacts(emulator)[0].request
    assert request["EmailMessage"]["RawMessage"]["Body"].startswith("The gateway could not read this email")
    assert request["EmailMessage"]["RawMessage"]["Subject"] == "attack"
    assert set(request["References"]) == {"Original email", "Not in this contact"}


async def test_a_mail_that_cannot_be_read_in_time_is_a_dead_letter_when_so_configured(
    spooled: Settings, emulator: EmulatorServer
) -> None:
    queue = replace(spooled.queue, read_budget=0.2, unreadable=Unreadable.DEAD)
    reply, _, _ = await processed(
        replace(spooled, queue=queue),
        SLOW_TO_READ,
        lambda gateway, reply: Spool(queue.path, create=False).counts()[MailState.DEAD] == 1,
    )
    assert reply.startswith("250")
    assert contacts(emulator) == []
    [dead] = Spool(queue.path, create=False).mails(MailState.DEAD)
    assert dead.last_error is not None and dead.last_error.startswith("could not be read")


async def test_a_bare_cr_cannot_hide_a_forged_sender(spooled: Settings, emulator: EmulatorServer) -> None:
    """What a DMARC filter in front saw (alice) is what the contact says: a CR alone is no line end."""
    body = (
        b"X-Note: hi\rFrom: CEO <ceo@bank.example>\r\nFrom: alice@customer.test\r\n"
        b"To: support@example.com\r\nSubject: hello\r\n\r\nbody"
    )
    reply, _, _ = await processed(spooled, body, one_contact(emulator))
    assert reply.startswith("250")
    assert contacts(emulator)[0].request["FromEmailAddress"] == {"EmailAddress": "alice@customer.test"}


# -- the smaller items ------------------------------------------------------------------------------------


@pytest.fixture
async def door(door_factory: Callable[..., Any]) -> Any:
    return await door_factory()


async def greeted(door: Any) -> Session:
    session: Session = await door.session()
    return session


async def test_invalid_utf8_in_an_address_gets_a_syntax_refusal_not_a_local_error(door: Any) -> None:
    session = await greeted(door)
    assert (await session.command(b"MAIL FROM:<a\xff\xfe@client.test> SMTPUTF8")).startswith("553 5.1.7")
    assert (await session.command("MAIL FROM:<a@client.test> SMTPUTF8")).startswith("250")
    assert (await session.command(b"RCPT TO:<support\xff@example.com>")).startswith("501 5.1.3")
    assert (await session.command("NOOP")).startswith("250")  # no 451, and the session goes on


async def test_a_non_ascii_address_needs_smtputf8(door: Any) -> None:
    session = await greeted(door)
    assert (await session.command("MAIL FROM:<jürgen@client.test>")).startswith("553 5.6.7")
    assert (await session.command("MAIL FROM:<a@client.test>")).startswith("250")
    assert (await session.command("RCPT TO:<sü@help.example.com>")).startswith("553 5.6.7")
    assert (await session.command("RSET")).startswith("250")
    assert (await session.command("MAIL FROM:<jürgen@client.test> SMTPUTF8")).startswith("250")
    assert (await session.command("RCPT TO:<sü@help.example.com>")).startswith("250")


async def test_an_auth_login_answer_that_is_not_base64_gets_one_reply(
    door_factory: Callable[..., Any], certificates: tuple[trustme.CA, TlsSettings], credentials_file: Path
) -> None:
    """aiosmtpd answers a refused AUTH answer itself; the gateway once sent a second reply after it."""
    ca, tls = certificates
    door = await door_factory(
        tls_context=server_context(tls), credentials=Credentials.load(credentials_file), implicit=True
    )
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    session = await door.connect(ssl_context=trusting, port=door.server.implicit_tls_port)
    assert (await session.reply()).startswith("220")
    assert (await session.command("EHLO client.test")).startswith("250")
    assert (await session.command("AUTH LOGIN")).startswith("334")
    assert (await session.command("not base64!")).startswith("501 5.5.2")
    assert await session.command("NOOP") == "250 2.0.0 OK"  # the NOOP's reply, not a second AUTH reply
    assert (await session.command("AUTH LOGIN")).startswith("334")
    assert (await session.command("*")).startswith("501")
    assert await session.command("NOOP") == "250 2.0.0 OK"


async def test_a_session_of_only_noops_is_closed_after_the_junk_limit(
    door_factory: Callable[..., Any],
) -> None:
    """200 NOOPs once kept a session (and its connection slot) past any timeout."""
    door = await door_factory(limits=LimitSettings(max_junk_commands=100))
    session = await greeted(door)
    for _ in range(100):
        assert (await session.command("NOOP")).startswith("250")
    assert await session.command("NOOP") == str(Replies.TOO_MANY_COMMANDS)
    assert await session.closed()


async def test_postmaster_is_accepted_and_routed(door: Any) -> None:
    """RFC 5321 §4.5.1: RCPT TO:<postmaster> must be accepted; it goes to the first fixed address."""
    session = await greeted(door)
    assert (await session.command("MAIL FROM:<a@client.test>")).startswith("250")
    assert (await session.command("RCPT TO:<Postmaster>")).startswith("250")
    assert (await session.command("RCPT TO:<postmaster@help.example.com>")).startswith("250")
    assert (await session.command("DATA")).startswith("354")
    await session.send(b"Subject: hi\r\n\r\nfor the postmaster\r\n.\r\n")
    assert (await session.reply()).startswith("250")
    [mail] = door.sink.mails
    assert [t.destination for t in mail.targets] == ["support@example.com", "help@example.com"]
