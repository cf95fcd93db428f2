"""The SMTP front door over a real socket, with stdlib smtplib as the client."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator

import pytest

from gateway.frontdoor.smtp import SmtpServer
from gateway.mail import ReceivedMail
from gateway.replies import Replies, Reply
from gateway.sandbox.run import sandbox_route
from gateway.settings import SmtpSettings

from ..helpers import RecordingSink, SmtpClient, make_door


class ExplodingSink(RecordingSink):
    async def accept(self, mail: ReceivedMail) -> Reply:
        raise RuntimeError("secret internal detail: /etc/shadow")


SIZE_LIMIT = 100_000


@pytest.fixture
async def sink() -> RecordingSink:
    return RecordingSink(Replies.DELIVERED.format(contacts="c-1"))


@pytest.fixture
async def front_door(sink: RecordingSink) -> AsyncIterator[SmtpServer]:
    from gateway.settings import RouteSettings

    routes = (
        RouteSettings(match="support@example.com", instance_id="i-1"),
        RouteSettings(match="*@help.example.com", instance_id="i-2", destination="help@example.com"),
    )
    settings = SmtpSettings(host="127.0.0.1", port=0, hostname="mx.gateway.test", max_message_size=SIZE_LIMIT)
    server = SmtpServer(make_door(sink, routes, settings))
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def client(front_door: SmtpServer) -> SmtpClient:
    return SmtpClient(front_door.port)


MAIL = b"From: customer@client.test\r\nSubject: hello\r\n\r\nbody\r\n"


async def test_ehlo_advertises_the_extensions(client: SmtpClient) -> None:
    def ehlo(session: smtplib.SMTP) -> tuple[int, dict[str, str]]:
        code, _ = session.ehlo("client.test")
        return code, dict(session.esmtp_features)

    code, features = await client.run(ehlo)
    assert code == 250
    assert features["size"] == str(SIZE_LIMIT)
    assert {"8bitmime", "smtputf8", "pipelining", "enhancedstatuscodes"} <= set(features)
    assert "auth" not in features and "starttls" not in features


async def test_a_mail_reaches_the_sink_with_its_envelope(client: SmtpClient, sink: RecordingSink) -> None:
    code, text = await client.send(MAIL, recipients=["support@example.com", "anyone+tag@help.example.com"])
    assert (code, text) == (250, "2.0.0 Delivered to Amazon Connect as contact c-1")
    [mail] = sink.mails
    assert mail.sender == "customer@client.test"
    assert mail.recipients == ("support@example.com", "anyone+tag@help.example.com")
    assert [t.destination for t in mail.targets] == ["support@example.com", "help@example.com"]
    assert mail.targets[1].tag == "tag"
    assert mail.content.read() == MAIL
    assert mail.helo == "client.test"


@pytest.mark.parametrize(
    ("commands", "expected"),
    [
        (["MAIL FROM:<a@client.test>", "RCPT TO:<nobody@example.com>"], (550, "5.1.1")),
        (["MAIL FROM:<a@client.test>", "RCPT TO:<victim@elsewhere.example>"], (550, "5.7.1")),
        (["MAIL FROM:<a@client.test>", "RCPT TO:<victim%elsewhere.example@example.com>"], (550, "5.7.1")),
        (["MAIL FROM:<a@client.test>", "RCPT TO:<elsewhere.example!victim@example.com>"], (550, "5.7.1")),
        (["MAIL FROM:<a@client.test>", "RCPT TO:<elsewhere!victim>"], (550, "5.7.1")),
        (["MAIL FROM:<a@client.test>", "RCPT TO:<@example.com:victim@elsewhere.example>"], (550, "5.7.1")),
        (["MAIL FROM:<a@client.test>", "RCPT TO:<@relay.example:support@example.com>"], (550, "5.7.1")),
        (["MAIL FROM:<a@client.test>", "RCPT TO:<bad address@example.com>"], (501, "5.1.3")),
        (["MAIL FROM:<a@client.test>", "RCPT TO:<>"], (501, "5.5.4")),
        (["MAIL FROM:<a@client.test>", "RCPT TO:<support@example.com> NOTIFY=NEVER"], (555, "5.5.4")),
        (["MAIL FROM:<bad@@client.test>"], (553, "5.1.7")),
        (["MAIL FROM:<a@client.test> RET=HDRS"], (555, "5.5.4")),
        (["MAIL FROM:<a@client.test> SIZE=abc"], (501, "5.5.4")),
        ([f"MAIL FROM:<a@client.test> SIZE={SIZE_LIMIT + 1}"], (552, "5.3.4")),
        (["MAIL TO:<a@client.test>"], (501, "5.5.4")),
        (["MAIL FROM:<a@client.test>", "MAIL FROM:<b@client.test>"], (503, "5.5.1")),
        (["RCPT TO:<support@example.com>"], (503, "5.5.1")),
        (["DATA"], (503, "5.5.1")),
        (["MAIL FROM:<a@client.test>", "DATA"], (554, "5.5.1")),
    ],
)
async def test_refusals(client: SmtpClient, commands: list[str], expected: tuple[int, str]) -> None:
    replies = await client.commands(*commands)
    code, text = replies[-1]
    assert (code, text.split(" ")[0]) == expected
    assert all(r[0] == 250 for r in replies[:-1])


async def test_null_sender_and_quoted_local_parts_are_accepted(client: SmtpClient) -> None:
    replies = await client.commands("MAIL FROM:<>", 'RCPT TO:<"john doe"@help.example.com>')
    assert [code for code, _ in replies] == [250, 250]


async def test_commands_before_ehlo_are_refused(front_door: SmtpServer) -> None:
    def talk(session: smtplib.SMTP) -> tuple[int, bytes]:
        session.putcmd("MAIL FROM:<a@client.test>")
        return session.getreply()

    code, text = await SmtpClient(front_door.port).run(talk)
    assert (code, text) == (503, b"5.5.1 Send EHLO or HELO first")


async def test_oversize_data_is_refused_and_the_session_goes_on(
    client: SmtpClient, sink: RecordingSink
) -> None:
    big = MAIL + b"x" * 1000 + (b"\r\n" + b"y" * 998) * 150

    def two_mails(session: smtplib.SMTP) -> list[tuple[int, bytes]]:
        session.ehlo("client.test")
        results = []
        for body in (big, MAIL):
            session.mail("a@client.test")
            session.rcpt("support@example.com")
            results.append(session.data(body))
        return results

    (first, second) = await client.run(two_mails)
    assert first[0] == 552 and first[1].startswith(b"5.3.4 Message too big")
    assert second[0] == 250
    assert len(sink.mails) == 1


async def test_pipelined_commands_get_their_replies_in_order(
    front_door: SmtpServer, sink: RecordingSink
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", front_door.port)
    await reader.readline()
    writer.write(b"EHLO client.test\r\n")
    await writer.drain()
    while not (await reader.readline()).startswith(b"250 "):
        pass
    writer.write(b"MAIL FROM:<a@client.test>\r\nRCPT TO:<nobody@example.com>\r\n")
    writer.write(b"RCPT TO:<support@example.com>\r\nDATA\r\n")
    await writer.drain()
    replies = [await reader.readline() for _ in range(4)]
    assert [r[:3] for r in replies] == [b"250", b"550", b"250", b"354"]
    writer.write(MAIL + b".\r\nQUIT\r\n")
    await writer.drain()
    assert (await reader.readline()).startswith(b"250 2.0.0")
    assert (await reader.readline()).startswith(b"221")
    writer.close()
    assert len(sink.mails) == 1


async def test_internal_errors_never_reach_the_client() -> None:
    server = SmtpServer(make_door(ExplodingSink(), [sandbox_route()]))
    await server.start()
    try:
        code, text = await SmtpClient(server.port).send(MAIL)
    finally:
        await server.stop()
    assert (code, text) == (451, "4.3.0 Temporary local problem; please try again later")
    assert "secret" not in text


async def test_long_lines_and_bare_lf_are_accepted_intact(client: SmtpClient, sink: RecordingSink) -> None:
    long_line = b"<p>" + b"a" * 10_000 + b"</p>"
    # smtplib sends bytes as they are (only dot-stuffed): these lines really end in a bare LF.
    body = b"From: a@client.test\nSubject: bare LF\n\nline one\n" + long_line + b"\n.leading dot\r\n"
    code, _ = await client.send(body)
    assert code == 250
    assert sink.mails[0].content.read() == (
        b"From: a@client.test\r\nSubject: bare LF\r\n\r\nline one\r\n" + long_line + b"\r\n.leading dot\r\n"
    )


async def test_lf_dot_lf_does_not_end_data(front_door: SmtpServer, sink: RecordingSink) -> None:
    """SMTP smuggling: only <CR><LF>.<CR><LF> ends DATA; the smuggled commands stay content."""
    reader, writer = await asyncio.open_connection("127.0.0.1", front_door.port)
    await reader.readline()
    writer.write(b"EHLO c.test\r\nMAIL FROM:<a@client.test>\r\nRCPT TO:<support@example.com>\r\nDATA\r\n")
    while not (await reader.readline()).startswith(b"354"):
        pass
    writer.write(b"Subject: one\r\n\r\nbody\n.\nMAIL FROM:<evil@client.test>\r\nbody\n.\r\nmore\r\n.\r\n")
    reply = await reader.readline()
    writer.close()
    assert reply.startswith(b"250")
    [mail] = sink.mails
    assert (
        mail.content.read()
        == b"Subject: one\r\n\r\nbody\r\n.\r\nMAIL FROM:<evil@client.test>\r\nbody\r\n.\r\nmore\r\n"
    )
