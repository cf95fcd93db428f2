"""Telling automatic mail from a person's, and the front door's admission rules, as pure functions."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.frontdoor import _networks, parse_limits
from gateway.config.table import Table
from gateway.errors import ConfigError
from gateway.frontdoor.admission import Admission, in_networks
from gateway.frontdoor.credentials import Credentials, hash_password
from gateway.frontdoor.triage import screen
from gateway.mail import InMemoryContent
from gateway.message.automatic import classify
from gateway.replies import Replies
from gateway.settings import AccessSettings, AuthSettings, LimitSettings

from ..helpers import Clock


@pytest.mark.parametrize(
    ("headers", "sender", "kind"),
    [
        ([("From", "a@client.test"), ("Subject", "hi")], "a@client.test", "no"),
        ([("Auto-Submitted", "no")], "a@client.test", "no"),
        ([("Auto-Submitted", "auto-replied")], "a@client.test", "auto-reply"),
        ([("Auto-Submitted", "Auto-Generated; type=x")], "a@client.test", "auto-generated"),
        ([("X-Autoreply", "yes")], "a@client.test", "auto-reply"),
        ([("X-Autorespond", "x")], "a@client.test", "auto-reply"),
        ([("Precedence", "auto_reply")], "a@client.test", "auto-reply"),
        ([("X-Loop", "helpdesk@client.test")], "a@client.test", "auto-reply"),
        ([("Precedence", "bulk")], "a@client.test", "auto-generated"),
        ([("Precedence", "junk")], "a@client.test", "auto-generated"),
        ([("Precedence", "list")], "a@client.test", "list"),
        ([("List-Id", "<dev.lists.example>")], "a@client.test", "list"),
        ([("List-Unsubscribe", "<mailto:x@y>")], "a@client.test", "list"),
        ([("X-Auto-Response-Suppress", "DR, OOF")], "a@client.test", "auto-generated"),
        ([("X-Auto-Response-Suppress", "None")], "a@client.test", "no"),
        ([], "", "bounce"),
        ([], "MAILER-DAEMON@client.test", "bounce"),
        ([("From", "Mail Delivery System <Postmaster@client.test>")], None, "bounce"),
        ([("X-Failed-Recipients", "x@y")], "a@client.test", "bounce"),
        ([("Content-Type", "multipart/report; report-type=delivery-status; boundary=x")], "a@b.c", "bounce"),
        (
            [("Content-Type", "multipart/report; report-type=disposition-notification")],
            "a@b.c",
            "auto-generated",
        ),
        ([("From", "a@client.test")], None, "no"),
    ],
)
def test_classify(headers: list[tuple[str, str]], sender: str | None, kind: str) -> None:
    assert classify(headers, sender) == kind


def test_screen_counts_hops_and_keeps_quiet_on_ordinary_mail() -> None:
    limits = LimitSettings()
    ordinary = screen(
        InMemoryContent(b"Received: a\r\nReceived: b\r\nSubject: x\r\n\r\nbody"), "a@b.c", limits, "mx"
    )
    assert (ordinary.refusal, ordinary.automatic, ordinary.received) == (None, "no", 2)
    no_separator = screen(InMemoryContent(b"Subject: only a header"), "a@b.c", limits, "mx")
    assert no_separator.refusal is None
    bare_lf = screen(InMemoryContent(b"Received: a\nSubject: x\n\nbody\n"), "a@b.c", limits, "mx")
    assert bare_lf.received == 1


def test_screen_reads_the_message_id_once_for_the_spool_and_the_logs() -> None:
    limits = LimitSettings()
    named_mail = InMemoryContent(b"Subject: x\r\nMessage-ID:  <m1@client.test> \r\n\r\nb")
    named = screen(named_mail, "a@b", limits, "mx")
    assert named.message_id == "<m1@client.test>"
    unnamed = screen(InMemoryContent(b"Subject: x\r\n\r\nMessage-ID: <in@body>\r\n"), "a@b", limits, "mx")
    assert (unnamed.message_id, unnamed.message_id_known) == (None, True)  # none: nobody looks again
    hops = b"Received: a\r\n" * (limits.max_received_headers + 1) + b"Message-ID: <loop@x>\r\n\r\nb"
    refused = screen(InMemoryContent(hops), "a@b", limits, "mx")
    assert refused.refusal is not None
    assert (refused.message_id, refused.message_id_known) == ("<loop@x>", True)
    big = b"X: " + b"y" * limits.max_header_size + b"\r\n\r\n"
    too_big = screen(InMemoryContent(big), "a@b", limits, "mx")
    assert too_big.refusal is not None and not too_big.message_id_known  # never parsed


def test_admission_counts_and_windows() -> None:
    clock = Clock()
    admission = Admission(
        AccessSettings(
            clients=_networks(["10.0.0.0/8", "2001:db8::/32"]), senders_allow=("*@client.test", "<>")
        ),
        LimitSettings(max_connections=3, max_connections_per_client=2, max_mails_per_client_per_minute=2),
        AuthSettings(max_failures=2, failure_window=60),
        clock=clock,
    )
    assert admission.open("192.0.2.1") == Replies.NETWORK_REFUSED
    assert admission.open("10.0.0.1") is None
    assert admission.open("10.0.0.1") is None
    assert admission.open("10.0.0.1") == Replies.TOO_MANY_CLIENT_CONNECTIONS
    assert admission.open("2001:db8::1") is None
    assert admission.open("10.0.0.2") == Replies.TOO_MANY_CONNECTIONS
    admission.close("10.0.0.1")
    assert admission.open("10.0.0.2") is None
    assert admission.mail("10.0.0.1") is None
    assert admission.mail("10.0.0.1") is None
    assert admission.mail("10.0.0.1") == Replies.TOO_MANY_MAILS
    clock.now = 60.0
    assert admission.mail("10.0.0.1") is None
    admission.auth_failed("10.0.0.1")
    admission.auth_failed("10.0.0.1")
    assert admission.auth_blocked("10.0.0.1")
    clock.now = 121.0
    assert not admission.auth_blocked("10.0.0.1")
    assert admission.sender("x@client.test") is None
    assert admission.sender("") is None
    assert admission.sender("x@elsewhere.test") == Replies.SENDER_REFUSED


def test_networks_match_mapped_and_unmapped_addresses() -> None:
    networks = _networks(["192.0.2.0/24"])
    assert in_networks("::ffff:192.0.2.9", networks)
    assert not in_networks("not an address", networks)


def test_memory_budget_is_checked_against_the_machine() -> None:
    """DATA streams to a file past 256 KiB, so a connection costs 768 KiB whatever the size limit: half of a
    2 GiB container affords 1,365 (the default stops at 1,000), and 1,000 of them need 750 MiB."""
    gib = 1024**3
    defaults = parse_limits(Table({}, "limits"), memory=24 * gib)
    assert defaults.max_connections == 1000
    assert defaults.listen_backlog == 2000
    assert defaults.max_connections_per_client == 50
    assert defaults.max_mails_per_client_per_minute == 60
    assert parse_limits(Table({}, "limits"), memory=gib).max_connections == 682
    # A small machine still takes a relay's 20 connections and more: the default never goes below 50.
    small = parse_limits(Table({}, "limits"), memory=64 * 1024**2)
    assert small.max_connections == 50
    assert parse_limits(Table({"max_connections": 1000}, "limits"), memory=2 * gib).max_connections == 1000
    with pytest.raises(ConfigError, match=r"limits.max_connections: 1000 connections may need 750 MiB"):
        parse_limits(Table({"max_connections": 1000}, "limits"), memory=gib // 2)
    # Longer lines cost more: each connection may hold three of them.
    with pytest.raises(ConfigError, match=r"100 connections may need 356 MiB while mails arrive \(3,648 KiB"):
        parse_limits(Table({"max_connections": 100, "max_line_length": "1MiB"}, "limits"), memory=gib // 4)


def test_the_connection_cost_knows_where_a_mail_spills_to_a_file() -> None:
    """The configuration (a lower layer) cannot import the DATA path's threshold: they must agree."""
    from gateway.config import frontdoor
    from gateway.delivery import incoming

    assert frontdoor.SMALL_MAIL_BYTES == incoming.SMALL_MAIL_BYTES


def test_the_listen_backlog_is_configurable() -> None:
    limits = parse_limits(Table({"max_connections": 10, "backlog": 4096}, "limits"), memory=1024**3)
    assert (limits.max_connections, limits.listen_backlog) == (10, 4096)
    assert parse_limits(Table({"max_connections": 10}, "limits"), memory=1024**3).listen_backlog == 20
    with pytest.raises(ConfigError, match=r"limits.backlog: must be at least 1"):
        parse_limits(Table({"backlog": 0}, "limits"), memory=1024**3)


def test_relays_skip_the_per_client_limits_but_not_the_total() -> None:
    """Postfix exempts $mynetworks; this gateway exempts relay_networks (this machine by default)."""
    admission = Admission(
        AccessSettings(),
        LimitSettings(max_connections=4, max_connections_per_client=1, max_mails_per_client_per_minute=1),
        AuthSettings(),
        clock=Clock(),
    )
    assert [admission.open("127.0.0.1") for _ in range(4)] == [None] * 4
    assert admission.open("::1") == Replies.TOO_MANY_CONNECTIONS  # the total holds for relays too
    assert [admission.mail("::1") for _ in range(100)] == [None] * 100
    assert [admission.mail("::ffff:127.0.0.5") for _ in range(100)] == [None] * 100
    assert admission.mail("192.0.2.1") is None
    assert admission.mail("192.0.2.1") == Replies.TOO_MANY_MAILS


def test_credentials_file(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text(f"# comment\n\nrelay:{hash_password('s3cret', rounds=4)}\n")
    credentials = Credentials.load(path)
    assert credentials.verify(b"relay", b"s3cret")
    assert not credentials.verify(b"relay", b"wrong")
    assert not credentials.verify(b"nobody", b"s3cret")
    path.write_text("relay:plaintext\n")
    with pytest.raises(ConfigError, match="users:1: expected user:bcrypt-hash"):
        Credentials.load(path)
