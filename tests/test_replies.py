"""Every named reply: its code, its enhanced status code and its class agree (RFC 5321, RFC 3463)."""

from __future__ import annotations

import pytest

from gateway.replies import Replies, Reply

ALL = {name: value for name, value in vars(Replies).items() if isinstance(value, Reply)}

EXPECTED = {
    "OK": (250, "2.0.0"),
    "SENDER_OK": (250, "2.1.0"),
    "AUTH_OK": (235, "2.7.0"),
    "PARKED": (250, "2.0.0"),
    "TOO_MANY_CONNECTIONS": (421, "4.7.0"),
    "TOO_MANY_CLIENT_CONNECTIONS": (421, "4.7.0"),
    "TIMEOUT": (421, "4.4.2"),
    "TOO_MANY_MAILS": (450, "4.7.1"),
    "TOO_MANY_RECIPIENTS": (452, "4.5.3"),
    "AUTH_BLOCKED": (454, "4.7.0"),
    "BAD_CHARACTERS": (500, "5.5.2"),
    "HELO_SYNTAX": (501, "5.5.4"),
    "AUTH_SYNTAX": (501, "5.5.2"),
    "AUTH_ABORTED": (501, "5.7.0"),
    "AUTH_UNAVAILABLE": (502, "5.5.1"),
    "AUTH_MECHANISM": (504, "5.5.4"),
    "ALREADY_AUTHENTICATED": (503, "5.5.1"),
    "AUTH_REQUIRED": (530, "5.7.0"),
    "TLS_REQUIRED": (530, "5.7.0"),
    "AUTH_FAILED": (535, "5.7.8"),
    "ENCRYPTION_REQUIRED": (538, "5.7.11"),
    "NETWORK_REFUSED": (554, "5.7.1"),
    "SENDER_REFUSED": (550, "5.7.1"),
    "AUTOMATIC_REFUSED": (550, "5.7.1"),
    "TOO_MANY_HOPS": (554, "5.4.6"),
    "LOOP": (554, "5.4.6"),
    "HEADER_TOO_BIG": (552, "5.3.4"),
    "TOO_MANY_PARTS": (554, "5.6.0"),
    "NESTED_TOO_DEEP": (554, "5.6.0"),
    "UNREADABLE": (554, "5.6.0"),
    "TOO_MANY_COMMANDS": (421, "4.7.0"),
    "RECIPIENT_OK": (250, "2.1.5"),
    "DELIVERED": (250, "2.0.0"),
    "QUEUED": (250, "2.0.0"),
    "NO_ROOM": (452, "4.3.1"),
    "EXPIRED": (554, "5.4.7"),
    "PARTLY_DELIVERED": (250, "2.0.0"),
    "DELIVERED_MANY": (250, "2.0.0"),
    "PARTLY_DELIVERED_MANY": (250, "2.0.0"),
    "CONNECT_FAILED": (451, "4.3.0"),
    "STORE_FAILED": (451, "4.3.0"),
    "THROTTLED": (451, "4.4.5"),
    "UNAVAILABLE": (451, "4.4.1"),
    "MISCONFIGURED": (451, "4.3.5"),
    "LOCAL_ERROR": (451, "4.3.0"),
    "HELO_FIRST": (503, "5.5.1"),
    "NESTED_MAIL": (503, "5.5.1"),
    "MAIL_FIRST": (503, "5.5.1"),
    "MAIL_SYNTAX": (501, "5.5.4"),
    "RCPT_SYNTAX": (501, "5.5.4"),
    "DATA_SYNTAX": (501, "5.5.4"),
    "PARAMETER_UNKNOWN": (555, "5.5.4"),
    "PARAMETER_INVALID": (501, "5.5.4"),
    "BAD_SENDER": (553, "5.1.7"),
    "BAD_RECIPIENT": (501, "5.1.3"),
    "SMTPUTF8_NEEDED": (553, "5.6.7"),
    "UNKNOWN_RECIPIENT": (550, "5.1.1"),
    "RELAY_DENIED": (550, "5.7.1"),
    "TOO_BIG": (552, "5.3.4"),
    "LINE_TOO_LONG": (552, "5.3.4"),
    "NO_VALID_RECIPIENTS": (554, "5.5.1"),
    "REFUSED_BY_CONNECT": (554, "5.6.0"),
    "SPAM_DEFERRED": (451, "4.7.1"),
    "DMARC_QUARANTINE_REFUSED": (550, "5.7.1"),
    "GREYLISTED": (451, "4.7.1"),
    "CHECKS_UNAVAILABLE": (451, "4.3.0"),
    "DMARC_REFUSED": (550, "5.7.1"),
    "SPF_REFUSED": (550, "5.7.1"),
    "SPAM_REFUSED": (550, "5.7.1"),
    "VIRUS_REFUSED": (554, "5.7.1"),
}


def test_every_reply_is_listed_here() -> None:
    assert set(ALL) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_reply_code(name: str) -> None:
    reply = ALL[name]
    assert (reply.code, reply.status) == EXPECTED[name]
    # The class of the enhanced code matches the class of the reply code (RFC 3463 §3.1).
    assert reply.status[0] == str(reply.code)[0]
    assert (reply.text and reply.text[0].isupper()) or reply.text.startswith("{")


def test_format_fills_placeholders_and_renders_the_line() -> None:
    reply = Replies.RELAY_DENIED.format(address="<a@b.c>")
    assert str(reply) == "550 5.7.1 Relaying denied: this gateway does not accept mail for <a@b.c>"
    assert reply.permanent and not reply.transient
    assert Replies.THROTTLED.transient


def test_a_long_listing_becomes_a_multi_line_reply_within_512_octets() -> None:
    """RFC 5321 §4.5.3.1.5: 512 octets a line, code and CRLF included; nothing is cut."""
    ids = [f"{n:08x}-0000-4000-8000-{n:012x}" for n in range(61)]
    reply = Replies.DELIVERED_MANY.format(count=61).listing(ids, separator=", ")
    lines = str(reply).split("\r\n")
    assert lines[0] == "250-2.0.0 Delivered to Amazon Connect as 61 contacts:"
    assert all(line.startswith("250-2.0.0 ") for line in lines[:-1]) and lines[-1].startswith("250 2.0.0 ")
    assert max(len(line.encode()) + 2 for line in lines) <= 512 and reply.fits()
    listed = ", ".join(line[len("250-2.0.0 ") :] for line in lines[1:]).split(", ")
    assert listed == ids
    assert not Replies.DELIVERED.format(contacts=", ".join(ids)).fits()  # one line would be 2,300 octets
