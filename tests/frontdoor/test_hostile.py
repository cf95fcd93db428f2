"""A hostile client against the front door, over real sockets: every case gets exactly the reply its
policy names, and nothing is accepted that should not be."""

from __future__ import annotations

import asyncio
import base64
import smtplib
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trustme

from gateway.config.frontdoor import _networks
from gateway.frontdoor.credentials import Credentials
from gateway.frontdoor.tls import CertificateReloader, server_context
from gateway.message.automatic import LOOP_HEADER
from gateway.replies import Replies
from gateway.settings import (
    AccessSettings,
    AuthSettings,
    LimitSettings,
    TlsSettings,
)

from .conftest import PASSWORD, Door

MAIL = b"From: customer@client.test\r\nSubject: hello\r\n\r\nbody\r\n"


async def test_open_relay_attempts_are_refused(door_factory: Callable[..., Any]) -> None:
    door = await door_factory()
    session = await door.session()
    assert (await session.command("MAIL FROM:<attacker@evil.test>")).startswith("250 2.1.0")
    for recipient, expected in [
        ("<victim@elsewhere.example>", "550 5.7.1"),
        ("<victim%elsewhere.example@example.com>", "550 5.7.1"),
        ("<elsewhere.example!victim@example.com>", "550 5.7.1"),
        ("<elsewhere.example!victim>", "550 5.7.1"),
        ('<"victim%elsewhere.example"@example.com>', "550 5.7.1"),
        ('<"victim@elsewhere.example"@example.com>', "550 5.1.1"),  # a mailbox of ours that does not exist
        ("<@example.com:victim@elsewhere.example>", "550 5.7.1"),
        ("<@relay.example,@example.com:support@example.com>", "550 5.7.1"),
        ("<victim@[192.0.2.1]>", "550 5.7.1"),
        ("<victim@example.com.evil.test>", "550 5.7.1"),
    ]:
        assert (await session.command(f"RCPT TO:{recipient}")).startswith(expected), recipient
    assert (await session.command("DATA")).startswith("554 5.5.1")  # no recipient was accepted
    session.close()
    assert door.sink.mails == []


async def test_auth_is_offered_and_accepted_only_over_tls(
    door_factory: Callable[..., Any], certificates: tuple[trustme.CA, TlsSettings], credentials_file: Path
) -> None:
    ca, tls = certificates
    door = await door_factory(tls_context=server_context(tls), credentials=Credentials.load(credentials_file))
    session = await door.session()
    plain = base64.b64encode(f"\x00relay\x00{PASSWORD}".encode()).decode()
    assert (await session.command(f"AUTH PLAIN {plain}")).startswith("538 5.7.11")
    session.close()

    def over_tls(client: smtplib.SMTP) -> tuple[bool, bool, tuple[int, bytes]]:
        client.ehlo("client.test")
        before = client.has_extn("auth")
        client.starttls(context=ca_context)
        client.ehlo("client.test")
        return before, client.has_extn("auth"), client.login("relay", PASSWORD)

    ca_context = ssl.create_default_context()
    ca.configure_trust(ca_context)
    before, after, login = await asyncio.to_thread(lambda: _smtp(door.port, over_tls))
    assert (before, after) == (False, True)
    assert login == (235, b"2.7.0 Authentication successful")


async def test_auth_login_and_wrong_passwords_are_rate_limited(
    door_factory: Callable[..., Any], certificates: tuple[trustme.CA, TlsSettings], credentials_file: Path
) -> None:
    ca, tls = certificates
    door = await door_factory(
        tls_context=server_context(tls),
        credentials=Credentials.load(credentials_file),
        auth=AuthSettings(max_failures=3),
    )
    ca_context = ssl.create_default_context()
    ca.configure_trust(ca_context)

    def attempts(client: smtplib.SMTP) -> list[str]:
        client.ehlo("client.test")
        client.starttls(context=ca_context)
        client.ehlo("client.test")
        replies = []
        for password in ("wrong-1", "wrong-2", "wrong-3", PASSWORD):
            code, text = client.docmd(
                "AUTH", "PLAIN " + base64.b64encode(f"\x00relay\x00{password}".encode()).decode()
            )
            replies.append(f"{code} {text.decode()}")
        code, text = client.docmd("AUTH", "LOGIN " + base64.b64encode(b"nobody").decode())
        replies.append(f"{code} {text.decode()}")
        return replies

    replies = await asyncio.to_thread(lambda: _smtp(door.port, attempts))
    assert [r[:9] for r in replies] == ["535 5.7.8", "535 5.7.8", "535 5.7.8", "454 4.7.0", "454 4.7.0"]


async def test_require_tls(
    door_factory: Callable[..., Any], certificates: tuple[trustme.CA, TlsSettings]
) -> None:
    ca, tls = certificates
    door = await door_factory(tls_context=server_context(tls), require_tls=True)
    session = await door.session()
    assert (
        await session.command("MAIL FROM:<a@client.test>") == "530 5.7.0 Must issue a STARTTLS command first"
    )
    session.close()
    ca_context = ssl.create_default_context()
    ca.configure_trust(ca_context)

    def send(client: smtplib.SMTP) -> Any:
        client.starttls(context=ca_context)
        return client.sendmail("a@client.test", ["support@example.com"], MAIL)

    assert await asyncio.to_thread(lambda: _smtp(door.port, send)) == {}
    assert len(door.sink.mails) == 1


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
async def test_implicit_tls_listener_and_old_protocols(
    door_factory: Callable[..., Any], certificates: tuple[trustme.CA, TlsSettings], credentials_file: Path
) -> None:
    ca, tls = certificates
    door = await door_factory(
        tls_context=server_context(tls), credentials=Credentials.load(credentials_file), implicit=True
    )
    port = door.server.implicit_tls_port
    assert port is not None
    ca_context = ssl.create_default_context()
    ca.configure_trust(ca_context)

    def implicit() -> tuple[bool, bool, tuple[int, bytes]]:
        with smtplib.SMTP_SSL("localhost", port, context=ca_context, timeout=10) as client:
            client.ehlo("client.test")
            return client.has_extn("starttls"), client.has_extn("auth"), client.login("relay", PASSWORD)

    starttls, auth, login = await asyncio.to_thread(implicit)
    assert (starttls, auth, login[0]) == (False, True, 235)
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.minimum_version = ssl.TLSVersion.TLSv1
    ca.configure_trust(old)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await door.connect(ssl_context=old, port=port)


async def test_certificate_is_reloaded_without_dropping_the_listener(
    door_factory: Callable[..., Any], certificates: tuple[trustme.CA, TlsSettings], tmp_path: Path
) -> None:
    ca, tls = certificates
    context = server_context(tls)
    door = await door_factory(tls_context=context)
    ca_context = ssl.create_default_context()
    ca.configure_trust(ca_context)

    def serial() -> int:
        with smtplib.SMTP("127.0.0.1", door.port, timeout=10) as client:
            client.starttls(context=ca_context)
            der = client.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
            return hash(der)

    first = await asyncio.to_thread(serial)
    renewed = ca.issue_cert("localhost", "127.0.0.1")
    renewed.private_key_pem.write_to_path(tmp_path / "key.pem")
    renewed.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
    import os

    os.utime(tmp_path / "cert.pem", (1, 1))  # a different timestamp, whatever the clock's resolution
    reloader = CertificateReloader(context, tls)
    reloader._seen = (0.0, 0.0)
    assert reloader.reload_if_changed()
    assert await asyncio.to_thread(serial) != first


async def test_networks_and_proxy_protocol(door_factory: Callable[..., Any]) -> None:
    access = AccessSettings(
        clients=_networks(["127.0.0.0/30", "198.51.100.0/24"]),
        proxy_protocol=True,
        proxy_trusted=_networks(["127.0.0.1/32"]),
    )
    door = await door_factory(access=access, proxy_protocol=True)
    # The trusted load balancer says the client is 203.0.113.9: not an allowed network.
    session = await door.connect()
    await session.send(b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 25\r\n")
    assert await session.reply() == str(Replies.NETWORK_REFUSED)
    assert await session.closed()
    # ...and now 198.51.100.7, which is allowed.
    session = await door.connect()
    await session.send(b"PROXY TCP4 198.51.100.7 127.0.0.1 40000 25\r\n")
    assert (await session.reply()).startswith("220 ")
    session.close()
    # A client that is not a trusted load balancer may not claim an address.
    session = await door.connect(source="127.0.0.2")
    await session.send(b"PROXY TCP4 198.51.100.7 127.0.0.1 40000 25\r\n")
    assert await session.reply() == ""
    # Without PROXY, the connecting address counts: 127.0.0.5 is outside 127.0.0.0/30.
    plain = await door_factory(access=AccessSettings(clients=_networks(["127.0.0.0/30"])))
    session = await plain.connect(source="127.0.0.5")
    assert await session.reply() == str(Replies.NETWORK_REFUSED)
    assert await session.closed()


async def test_without_auth_networks_and_sender_policy(
    door_factory: Callable[..., Any], certificates: tuple[trustme.CA, TlsSettings], credentials_file: Path
) -> None:
    _, tls = certificates
    access = AccessSettings(without_auth=_networks(["127.0.0.2/32"]), senders_deny=("*@spammer.test",))
    door = await door_factory(
        access=access, tls_context=server_context(tls), credentials=Credentials.load(credentials_file)
    )
    outsider = await door.session(source="127.0.0.3")
    assert await outsider.command("MAIL FROM:<a@client.test>") == "530 5.7.0 Authentication required"
    outsider.close()
    insider = await door.session(source="127.0.0.2")
    assert (await insider.command("MAIL FROM:<a@client.test>")).startswith("250")
    assert await insider.command("RSET") == "250 2.0.0 OK"
    assert await insider.command("MAIL FROM:<bulk@SPAMMER.test>") == str(Replies.SENDER_REFUSED)
    insider.close()


async def test_limits(door_factory: Callable[..., Any]) -> None:
    door = await door_factory(limits=LimitSettings(max_recipients=3, max_mails_per_client_per_minute=2))
    session = await door.session()
    assert (await session.command("MAIL FROM:<a@client.test>")).startswith("250")
    for number in range(3):
        assert (await session.command(f"RCPT TO:<r{number}@help.example.com>")).startswith("250")
    assert await session.command("RCPT TO:<r3@help.example.com>") == str(Replies.TOO_MANY_RECIPIENTS)
    assert await session.command("RSET") == "250 2.0.0 OK"
    assert (await session.command("MAIL FROM:<a@client.test>")).startswith("250")
    assert await session.command("RSET") == "250 2.0.0 OK"
    assert await session.command("MAIL FROM:<a@client.test>") == str(Replies.TOO_MANY_MAILS)
    session.close()


async def test_slow_loris_is_cut_off(door_factory: Callable[..., Any]) -> None:
    door = await door_factory(limits=LimitSettings(command_timeout=1, data_timeout=1))
    silent = await door.session(greet=False)
    await silent.send(b"EHLO sl")  # a command that never ends
    assert await silent.reply(seconds=5) == str(Replies.TIMEOUT)
    assert await silent.closed()
    dribbler = await door.session()
    for line in ("MAIL FROM:<a@client.test>", "RCPT TO:<support@example.com>", "DATA"):
        await dribbler.command(line)
    await dribbler.send(b"Subject: slow\r\n")
    started = asyncio.get_running_loop().time()
    reply = ""
    while not reply and asyncio.get_running_loop().time() - started < 10:
        # one line every half second: alive, but far below the 256 KiB per data_timeout a real MTA sends
        try:
            await dribbler.send(b"x\r\n")
            reply = await dribbler.reply(seconds=0.5)
        except (TimeoutError, ConnectionError):
            continue
    assert reply == str(Replies.TIMEOUT)
    assert asyncio.get_running_loop().time() - started < 3
    assert door.sink.mails == []


async def test_a_connection_flood_is_refused_and_others_are_served(door_factory: Callable[..., Any]) -> None:
    door = await door_factory(limits=LimitSettings(max_connections=20, max_connections_per_client=5))
    flood = [await door.connect(source="127.0.0.2") for _ in range(25)]
    greetings = [await session.reply() for session in flood]
    assert greetings.count(str(Replies.TOO_MANY_CLIENT_CONNECTIONS)) == 20
    assert sum(g.startswith("220 ") for g in greetings) == 5
    others = [await door.connect(source=f"127.0.0.{n}") for n in range(3, 7)]
    assert all(reply.startswith("220 ") for reply in [await s.reply() for s in others])

    def well_behaved() -> Any:
        with smtplib.SMTP("127.0.0.1", door.port, source_address=("127.0.0.9", 0), timeout=10) as client:
            return client.sendmail("a@client.test", ["support@example.com"], MAIL)

    assert await asyncio.to_thread(well_behaved) == {}  # 9 of 20 slots held by the others: still served
    crowd = [await door.connect(source=f"127.0.1.{n}") for n in range(15)]  # 11 slots left for 15
    crowd_greetings = [await s.reply() for s in crowd]
    assert crowd_greetings.count(str(Replies.TOO_MANY_CONNECTIONS)) == 4
    assert door.admission.connections == 20


async def test_relays_are_exempt_from_the_per_client_limits(door_factory: Callable[..., Any]) -> None:
    """A relay of one's own (relay_networks) opens as many connections and sends as many mails as it needs;
    the same burst from any other client meets the per-client limits."""
    limits = LimitSettings(
        max_connections=30, max_connections_per_client=2, max_mails_per_client_per_minute=3
    )
    door = await door_factory(
        limits=limits, access=AccessSettings(relay_networks=_networks(["127.0.0.2/32"]))
    )
    for source, refused in (("127.0.0.2", 0), ("127.0.0.3", 6)):
        sessions = [await door.connect(source=source) for _ in range(8)]
        greetings = [await session.reply() for session in sessions]
        assert greetings.count(str(Replies.TOO_MANY_CLIENT_CONNECTIONS)) == refused
        accepted = [s for s, greeting in zip(sessions, greetings, strict=True) if greeting.startswith("220 ")]
        replies = []
        for session in accepted:
            assert (await session.command("EHLO client.test")).startswith("250")
            replies.append(await session.command("MAIL FROM:<app@client.test>"))
            await session.command("RSET")
            replies.append(await session.command("MAIL FROM:<app@client.test>"))
        if refused:
            assert replies.count(str(Replies.TOO_MANY_MAILS)) == len(replies) - 3
        else:
            assert all(reply.startswith("250 ") for reply in replies) and len(replies) == 16


async def data(door: Door, body: bytes, sender: str = "a@client.test") -> str:
    session = await door.session()
    for line in (f"MAIL FROM:<{sender}>", "RCPT TO:<support@example.com>"):
        assert (await session.command(line)).startswith("250"), line
    assert (await session.command("DATA")).startswith("354")
    await session.send(body + b".\r\n")
    reply = await session.reply()
    session.close()
    return reply


async def test_loops_sizes_and_parts(door_factory: Callable[..., Any]) -> None:
    door = await door_factory(limits=LimitSettings(max_header_size=4096, max_mime_parts=10))
    hops = b"".join(b"Received: from hop%d.example by hop%d.example\r\n" % (n, n + 1) for n in range(30))
    assert await data(door, hops + MAIL) == "554 5.4.6 Too many hops (30 Received headers): a mail loop?"
    marked = f"{LOOP_HEADER}: mx.gateway.test\r\n".encode() + MAIL
    assert await data(door, marked) == str(Replies.LOOP)
    assert (await data(door, f"{LOOP_HEADER}: another.gateway\r\n".encode() + MAIL)).startswith("250")
    long_header = b"X-Long: " + b"a" * 5000 + b"\r\n" + MAIL
    assert (await data(door, long_header)).startswith("552 5.3.4 The header section is larger")
    parts = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + b"".join(
        b"--b\r\nContent-Type: text/plain\r\n\r\npart\r\n" for _ in range(12)
    )
    assert await data(door, parts + b"--b--\r\n") == "554 5.6.0 The message has more than 10 MIME parts"
    assert len(door.sink.mails) == 1


OUT_OF_OFFICE = (
    b"From: customer@client.test\r\nSubject: Out of office\r\nAuto-Submitted: auto-replied\r\n"
    b"X-Auto-Response-Suppress: All\r\n\r\nI am away.\r\n"
)
BOUNCE = (
    b"From: Mail Delivery System <MAILER-DAEMON@client.test>\r\nSubject: Undelivered\r\n"
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n--x--\r\n"
)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("forward", "250 2.0.0 Queued as"),
        ("refuse", str(Replies.AUTOMATIC_REFUSED)),
        ("drop", "250 2.0.0 Accepted as automatic mail"),
    ],
)
async def test_automatic_mail_policies(door_factory: Callable[..., Any], policy: str, expected: str) -> None:
    door = await door_factory(automatic_policy=policy)
    assert (await data(door, OUT_OF_OFFICE)).startswith(expected)
    assert (await data(door, BOUNCE, sender="")).startswith(expected)
    assert (await data(door, MAIL)).startswith("250 2.0.0 Queued as")  # a person's mail always goes through
    assert len(door.sink.parked) == (2 if policy == "drop" else 0)


async def test_nul_and_bare_cr_in_commands(door_factory: Callable[..., Any]) -> None:
    door = await door_factory()
    session = await door.session(greet=False)
    assert await session.command(b"EHLO bad\x00name") == str(Replies.HELO_SYNTAX)
    assert (await session.command(b"EHLO client.test")).startswith("250 ")
    assert await session.command(b"MAIL FROM:<a\x00@client.test>") == str(Replies.BAD_CHARACTERS)
    assert await session.command(b"MAIL FROM:<a@client.test>\rRCPT TO:<support@example.com>") == str(
        Replies.BAD_CHARACTERS
    )
    await session.send(b"MAIL FROM:<a@client.test>\n")  # a bare LF ends a command, as in Postfix
    assert (await session.reply()).startswith("250 2.1.0")
    assert await session.command(b"RCPT TO:<support@example.com>\x00") == str(Replies.BAD_CHARACTERS)
    assert (await session.command(b"FOO")).startswith("500 5.5.2")
    session.close()


def _smtp(port: int, action: Callable[[smtplib.SMTP], Any]) -> Any:
    with smtplib.SMTP("localhost", port, timeout=10) as client:
        return action(client)


async def test_proxy_protocol_version_2(door_factory: Callable[..., Any]) -> None:
    import ipaddress
    import struct

    access = AccessSettings(
        clients=_networks(["198.51.100.0/24"]), proxy_protocol=True, proxy_trusted=_networks(["127.0.0.1/32"])
    )
    door = await door_factory(access=access, proxy_protocol=True)

    def header(source: str) -> bytes:
        addresses = ipaddress.ip_address(source).packed + ipaddress.ip_address("127.0.0.1").packed
        body = addresses + struct.pack("!HH", 40000, 25)
        return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body

    allowed = await door.connect()
    await allowed.send(header("198.51.100.20"))
    assert (await allowed.reply()).startswith("220 ")
    refused = await door.connect()
    await refused.send(header("203.0.113.20"))
    assert await refused.reply() == str(Replies.NETWORK_REFUSED)


async def test_long_last_line_in_large_writes_is_refused_not_timed_out(
    door_factory: Callable[..., Any],
) -> None:
    """An over-long line whose CRLF arrives in the same segment as its last bytes: the CR is dropped with
    the line, and the end of DATA must still be seen (a 552 the sending MTA bounces, not a timeout it
    retries for days)."""
    door = await door_factory(limits=LimitSettings(data_timeout=60))
    session = await door.session()
    for line in ("MAIL FROM:<a@client.test>", "RCPT TO:<support@example.com>", "DATA"):
        assert (await session.command(line))[0] in "23", line
    body = b"first\r\n" + b"Q" * 100_000 + b"\r\n.\r\n"
    for start in range(0, len(body), 65536):
        await session.send(body[start : start + 65536])
    assert await session.reply(seconds=10) == str(Replies.LINE_TOO_LONG.format(limit=64 * 1024))
    assert (await session.command("NOOP")).startswith("250")  # the session goes on in sequence
    assert door.sink.mails == []
