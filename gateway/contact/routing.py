"""Which Connect instance and address a recipient's contact goes to, decided at RCPT time.

Routes are tried in file order and the first match wins. A route matches an address (``support@x``), a
domain (``*@x``) or everything (``*``). Plus-addressing is understood: ``support+billing@x`` matches a route
for ``support@x`` and keeps ``billing`` as the contact attribute :data:`TAG_ATTRIBUTE`. The gateway never
relays: a recipient in a domain no route serves is refused as a relay attempt, one in a served domain that
no route matches as an unknown mailbox.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gateway.addresses import Address, parse_address
from gateway.contact import contract
from gateway.errors import RefusedError
from gateway.mail import Target
from gateway.replies import Replies
from gateway.settings import RouteSettings

__all__ = ["POSTMASTER", "TAG_ATTRIBUTE", "Router"]

POSTMASTER = "postmaster"
TAG_SEPARATOR = "+"
TAG_ATTRIBUTE = "gateway_address_tag"


@dataclass(frozen=True, slots=True)
class _Pattern:
    route: RouteSettings
    address: str | None  # casefolded full address, for exact routes
    domain: str | None  # casefolded domain, for exact and domain routes; None for the catch-all


def _pattern(route: RouteSettings) -> _Pattern:
    if route.match == "*":
        return _Pattern(route, None, None)
    local, _, domain = route.match.rpartition("@")
    parsed = parse_address(f"any@{domain}" if local == "*" else route.match)
    return _Pattern(route, None if local == "*" else parsed.key, parsed.domain.casefold())


class Router:
    def __init__(self, routes: Iterable[RouteSettings], postmaster: str | None = None) -> None:
        """``postmaster``: where mail to postmaster goes (routed like that address): :meth:`postmaster`."""
        self._patterns = tuple(_pattern(route) for route in routes)
        self._catch_all = any(p.domain is None for p in self._patterns)
        self._domains = frozenset(p.domain for p in self._patterns if p.domain is not None)
        self._postmaster = postmaster

    def postmaster(self) -> Target:
        """Where mail to ``postmaster`` goes (RFC 5321 §4.5.1: it must be accepted), as Postfix's postmaster
        alias does: ``[smtp] postmaster`` routed like any recipient; unset, the first route with a fixed
        destination. With neither, it is refused (and ``mail-gateway check`` says so)."""
        if self._postmaster is not None:
            return self.resolve(parse_address(self._postmaster))
        for pattern in self._patterns:
            fixed = pattern.route.destination or (pattern.route.match if pattern.address else None)
            if fixed is not None:
                return self._target(pattern.route, fixed, None)
        raise RefusedError(Replies.UNKNOWN_RECIPIENT.format(address=f"<{POSTMASTER}>"))

    def resolve(self, address: Address) -> Target:
        """The target for a recipient, or :class:`RefusedError` with the reply that refuses it."""
        if address.hides_a_relay or not address.domain:
            raise RefusedError(Replies.RELAY_DENIED.format(address=f"<{address}>"))
        domain = address.domain.casefold()
        if not self._catch_all and domain not in self._domains:
            raise RefusedError(Replies.RELAY_DENIED.format(address=f"<{address}>"))
        base, tag = _untagged(address)
        for pattern in self._patterns:
            if pattern.domain is not None and pattern.domain != domain:
                continue
            if pattern.address is None:  # a domain or catch-all route: the recipient is the destination
                return self._target(pattern.route, str(base), tag)
            if pattern.address == address.key:
                return self._target(pattern.route, pattern.route.match, None)
            if pattern.address == base.key:
                return self._target(pattern.route, pattern.route.match, tag)
        if base.local.casefold() == POSTMASTER:  # postmaster@ a served domain, with no route of its own
            return self.postmaster()
        raise RefusedError(Replies.UNKNOWN_RECIPIENT.format(address=f"<{address}>"))

    @staticmethod
    def _target(route: RouteSettings, matched: str, tag: str | None) -> Target:
        """``matched`` is the address the route matched: the configured one, or the recipient's."""
        destination = route.destination or matched
        limits = contract.limits()
        if len(destination) > limits.address_chars or not contract.matches(
            limits.address_pattern, destination
        ):
            raise RefusedError(Replies.UNKNOWN_RECIPIENT.format(address=f"<{matched}>"))
        return Target(route, destination, tag)


def _untagged(address: Address) -> tuple[Address, str | None]:
    local, separator, tag = address.local.partition(TAG_SEPARATOR)
    if not separator or not local or address.local.startswith('"'):
        return address, None
    return Address(local, address.domain), tag or None
