"""Who may come in, and how much: client networks, connection counts, mail rates, AUTH failures, senders.

One :class:`Admission` is shared by every connection of the gateway, so the counts are per client address
across connections. Every refusal is a named reply: 4xx for what clears with time (too many connections,
mails or failed logins now), 5xx for policy (a network or sender that is not allowed). Clients in
``relay_networks`` (one's own relays and applications, as Postfix exempts ``$mynetworks``) are exempt from
the per-client limits; the total number of connections still holds for them.
"""

from __future__ import annotations

import fnmatch
import functools
import ipaddress
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable

from gateway.replies import Replies, Reply
from gateway.settings import AccessSettings, AuthSettings, LimitSettings, Network

__all__ = ["Admission", "in_networks"]

RATE_WINDOW_SECONDS = 60.0


@functools.lru_cache(maxsize=4096)
def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A client's address, parsed once: each mail asks about it several times (clients, relay, AUTH),
    and the parse showed in the accept path's profile."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:  # not an IP (a UNIX socket)
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def in_networks(address: str, networks: Iterable[Network]) -> bool:
    ip = _ip(address)
    if ip is None:  # not an IP (a UNIX socket): treat as local
        return False
    return any(ip.version == network.version and ip in network for network in networks)


def _matches(pattern: str, sender: str) -> bool:
    if pattern == "<>":
        return sender == ""
    return bool(sender) and fnmatch.fnmatchcase(sender.casefold(), pattern)


class Admission:
    def __init__(
        self,
        access: AccessSettings,
        limits: LimitSettings,
        auth: AuthSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._access = access
        self._limits = limits
        self._auth = auth
        self._clock = clock
        self._connections: dict[str, int] = defaultdict(int)
        self._mails: dict[str, deque[float]] = defaultdict(deque)
        self._failures: dict[str, deque[float]] = defaultdict(deque)

    def reconfigure(self, access: AccessSettings, limits: LimitSettings, auth: AuthSettings) -> None:
        """A reloaded configuration's policy; the connections and failures counted so far stay counted."""
        self._access, self._limits, self._auth = access, limits, auth

    @property
    def connections(self) -> int:
        return sum(self._connections.values())

    def open(self, client: str) -> Reply | None:
        """At the greeting: a refusal (and the connection is closed), or None and the client is counted."""
        if not in_networks(client, self._access.clients):
            return Replies.NETWORK_REFUSED
        if self.connections >= self._limits.max_connections:
            return Replies.TOO_MANY_CONNECTIONS
        if self._connections[client] >= self._limits.max_connections_per_client and not self.is_relay(client):
            return Replies.TOO_MANY_CLIENT_CONNECTIONS
        self._connections[client] += 1
        return None

    def close(self, client: str) -> None:
        self._connections[client] -= 1
        if self._connections[client] <= 0:
            del self._connections[client]

    def is_relay(self, client: str) -> bool:
        return in_networks(client, self._access.relay_networks)

    def proxy_trusted(self, peer: str) -> bool:
        return in_networks(peer, self._access.proxy_trusted)

    def needs_auth(self, client: str) -> bool:
        return not in_networks(client, self._access.without_auth)

    def sender(self, sender: str) -> Reply | None:
        """Sender policy: deny patterns first, then the allow list (if any)."""
        access = self._access
        if any(_matches(p, sender) for p in access.senders_deny):
            return Replies.SENDER_REFUSED
        if access.senders_allow and not any(_matches(p, sender) for p in access.senders_allow):
            return Replies.SENDER_REFUSED
        return None

    def mail(self, client: str) -> Reply | None:
        """One more mail from this client in the last minute, if the rate allows it (relays: always)."""
        if self.is_relay(client):
            return None
        recent = self._recent(self._mails[client], RATE_WINDOW_SECONDS)
        if len(recent) >= self._limits.max_mails_per_client_per_minute:
            return Replies.TOO_MANY_MAILS
        recent.append(self._clock())
        return None

    def auth_blocked(self, client: str) -> bool:
        return len(self._recent(self._failures[client], self._auth.failure_window)) >= self._auth.max_failures

    def auth_failed(self, client: str) -> None:
        self._failures[client].append(self._clock())

    def _recent(self, moments: deque[float], window: float) -> deque[float]:
        now = self._clock()
        while moments and now - moments[0] >= window:
            moments.popleft()
        return moments
