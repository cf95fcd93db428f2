"""Addresses as the SMTP front door sees them.

The path syntax of MAIL FROM and RCPT TO (RFC 5321 §4.1.2, source routes included), the address syntax
(email-validator, with ``check_deliverability=False``: never a DNS lookup), and the two old tricks of relay
abuse that hide a second hop in the local part (``user%other@us`` and ``other!user@us``).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

import email_validator

__all__ = ["Address", "AddressError", "Path", "parse_address", "parse_path"]

# Staging networks and corporate mail use special-use names (`.test`, `corp.local`); this gateway routes by
# its own configuration, never by DNS, so none of them is refused for its name alone.
email_validator.SPECIAL_USE_DOMAIN_NAMES.clear()

# The everyday address (ASCII dot-atom at ASCII host names, no label with "--" in it) has one reading:
# email-validator's for it is its local part as given and its domain in lower case. Recognised here at C
# speed; everything else (quoted, internationalised, literals, anything doubtful) goes to email-validator,
# which costs 75 us an address, twice a mail on the accept path. tests/test_addresses.py holds the two
# readings equal.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_EVERYDAY = re.compile(
    rf"([a-z0-9!#$%&'*+/=?^_`{{|}}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{{|}}~-]+)*)@((?:{_LABEL}\.)+[a-z][a-z0-9-]{{0,61}}[a-z0-9])",
    re.ASCII | re.IGNORECASE,
)


class AddressError(ValueError):
    """An address that cannot be used; the message is fit for a human reading an SMTP reply."""


@dataclass(frozen=True, slots=True)
class Address:
    local: str
    domain: str

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"

    @property
    def key(self) -> str:
        """The form used for comparisons: mail addresses are matched case-insensitively in practice."""
        return str(self).casefold()

    @property
    def hides_a_relay(self) -> bool:
        """``user%host@us`` and ``host!user@us`` ask us to forward the mail on: relay attempts."""
        return "%" in self.local or "!" in self.local


@dataclass(frozen=True, slots=True)
class Path:
    """The argument of MAIL FROM or RCPT TO, split into its parts."""

    mailbox: str  # "" for the null path <>
    parameters: str
    source_route: bool


def parse_path(argument: str) -> Path:
    """Split ``<@relay:user@host> SIZE=10`` into mailbox, parameters and whether a source route was given.

    Brackets are optional (some clients omit them); quoted local parts may contain ``>`` and spaces.
    """
    text = argument.strip()
    if not text.startswith("<"):
        mailbox, _, parameters = text.partition(" ")
        return Path(mailbox, parameters.strip(), source_route=mailbox.startswith("@"))
    end = _closing_bracket(text)
    if end < 0:
        raise AddressError("the address has no closing '>'")
    inner = text[1:end]
    source_route = inner.startswith("@")
    if source_route:
        colon = inner.find(":")
        if colon < 0:
            raise AddressError("the source route has no ':'")
        inner = inner[colon + 1 :]
    return Path(inner, text[end + 1 :].strip(), source_route)


def _closing_bracket(text: str) -> int:
    quoted = escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ">" and not quoted:
            return index
    return -1


def parse_address(text: str) -> Address:
    """A syntactically valid address, or :class:`AddressError` saying what is wrong with it."""
    if "@" not in text:
        if "!" in text:  # a UUCP bang path names another host: report it as such, not as a typo
            return Address(text, "")
        raise AddressError("an address needs an '@' and a domain")
    return _everyday(text) or _validated(text)


def _everyday(text: str) -> Address | None:
    everyday = _EVERYDAY.fullmatch(text)
    if everyday and len(everyday[1]) <= 64 and len(text) <= 254 and "--" not in everyday[2]:
        return Address(everyday[1], everyday[2].lower())
    return None


def _validated(text: str) -> Address:
    try:
        valid = email_validator.validate_email(
            text,
            check_deliverability=False,
            globally_deliverable=False,
            allow_smtputf8=True,
            allow_quoted_local=True,
            allow_domain_literal=True,
            allow_display_name=False,
        )
    except email_validator.EmailNotValidError as error:
        raise AddressError(str(error).rstrip(".")) from None
    return Address(valid.local_part, valid.domain)


def is_ip_literal(text: str) -> bool:
    """An IPv4 or IPv6 address as text (a client's, a Host header's), as opposed to a name."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
