"""SMTP paths and address syntax."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import addresses
from gateway.addresses import Address, AddressError, parse_address, parse_path


@pytest.mark.parametrize(
    ("argument", "mailbox", "parameters", "source_route"),
    [
        ("<a@b.example>", "a@b.example", "", False),
        (" <a@b.example> SIZE=100 BODY=8BITMIME", "a@b.example", "SIZE=100 BODY=8BITMIME", False),
        ("<>", "", "", False),
        ("a@b.example", "a@b.example", "", False),
        ("<@relay.example,@other.example:user@b.example>", "user@b.example", "", True),
        ('<"john > doe"@b.example> SMTPUTF8', '"john > doe"@b.example', "SMTPUTF8", False),
    ],
)
def test_parse_path(argument: str, mailbox: str, parameters: str, source_route: bool) -> None:
    path = parse_path(argument)
    assert (path.mailbox, path.parameters, path.source_route) == (mailbox, parameters, source_route)


@pytest.mark.parametrize("argument", ["<a@b.example", "<@relay.example user@b.example>"])
def test_parse_path_refuses_broken_brackets(argument: str) -> None:
    with pytest.raises(AddressError):
        parse_path(argument)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("user@example.com", Address("user", "example.com")),
        ("User@EXAMPLE.com", Address("User", "example.com")),
        ("someone@shop.test", Address("someone", "shop.test")),
        ("it@corp.local", Address("it", "corp.local")),
        ("root@localhost", Address("root", "localhost")),
        ("jörg@bücher.example", Address("jörg", "bücher.example")),
        ("user@[192.0.2.1]", Address("user", "[192.0.2.1]")),
    ],
)
def test_valid_addresses(text: str, expected: Address) -> None:
    assert parse_address(text) == expected


def test_quoted_local_part_is_kept() -> None:
    address = parse_address('"john doe"@example.com')
    assert address.domain == "example.com"
    assert "john doe" in address.local


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("no-at-sign", "needs an '@'"),
        ("two@@example.com", "after the @-sign contains invalid characters: '@'"),
        ("user@exa mple.com", "after the @-sign contains invalid characters: SPACE"),
        ("user@", "something after the @-sign"),
        ("(comment)user@example.com", "invalid characters before the @-sign"),
    ],
)
def test_invalid_addresses_say_why(text: str, reason: str) -> None:
    with pytest.raises(AddressError, match=reason):
        parse_address(text)


@pytest.mark.parametrize(
    ("text", "relay"),
    [
        ("user%other.example@example.com", True),
        ("other.example!user@example.com", True),
        ("a.b@example.com", False),
    ],
)
def test_relay_tricks_in_the_local_part(text: str, relay: bool) -> None:
    assert parse_address(text).hides_a_relay is relay


def test_bang_path_without_domain_is_a_relay_attempt() -> None:
    address = parse_address("host!user")
    assert address.hides_a_relay and address.domain == ""


@settings(max_examples=300)
@given(
    st.one_of(
        st.from_regex(addresses._EVERYDAY, fullmatch=True),
        st.from_regex(r"[A-Za-z0-9.!#%+_~-]{1,70}@[A-Za-z0-9.-]{1,70}", fullmatch=True),
    )
)
def test_everyday_addresses_read_as_email_validator_reads_them(text: str) -> None:
    """The fast reading of an everyday address is email-validator's, and it takes no address that
    email-validator refuses."""
    fast = addresses._everyday(text)
    if fast is None:
        return
    assert fast == addresses._validated(text)


@pytest.mark.parametrize(
    "text", ["a@ab--cd.example", "a@xn--bcher-kva.example", "a@b.123", "a@b.c", "a..b@c.example"]
)
def test_doubtful_addresses_go_to_email_validator(text: str) -> None:
    assert addresses._everyday(text) is None
