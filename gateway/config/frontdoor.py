"""The front door's settings: ``[tls]``, ``[auth]``, ``[access]``, ``[limits]`` and ``[automatic]``.

Every limit has a default fit for the open internet that never throttles a relay: the per-client limits
are Postfix's (50 connections), and ``relay_networks`` (this machine by default, as Postfix's
``$mynetworks``) is exempt from them. The memory the connections may take together is checked against the
machine's (its cgroup limit, else its RAM): DATA streams to a spool file past a small mail's size, so a
connection costs its session and that small buffer, whatever ``max_message_size`` is.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.config.table import Table
from gateway.settings import (
    EVERYWHERE,
    AccessSettings,
    AuthSettings,
    AutomaticSettings,
    LimitSettings,
    Network,
    TlsSettings,
)

__all__ = [
    "MIN_DEFAULT_CONNECTIONS",
    "memory_per_connection",
    "parse_access",
    "parse_auth",
    "parse_automatic",
    "parse_limits",
    "parse_tls",
]

MIN_DEFAULT_CONNECTIONS = 50  # Postfix's per-client limit, and more than a relay's 20 parallel deliveries
MAX_DEFAULT_CONNECTIONS = 1000  # beyond it, say so in the file (and raise the open-files limit to match)
CONNECTIONS_SHARE = 2  # connections may take 1/2 of the memory; the rest: the process, readers, page cache
SESSION_BYTES = 64 * 1024  # a session's objects, buffers and transport (measured 14 KiB with a 2 KB mail)
SMALL_MAIL_BYTES = 256 * 1024  # held in memory before a mail spills to a file (delivery/incoming.py)


def memory_per_connection(max_line_length: int) -> int:
    """The most one connection holds while a mail arrives: the small mail's buffer (it may be copied once
    when its last piece lands), an unfinished line and the piece being decoded, and the session. Measured
    (2026-11-30, 300 sessions each holding 250 KB of an unfinished DATA): 523 KiB a connection, against
    768 KiB here at the default 64 KiB lines."""
    return SESSION_BYTES + 2 * SMALL_MAIL_BYTES + 3 * max_line_length


def _networks(value: Any) -> tuple[Network, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError('must be a list of networks, such as ["10.0.0.0/8", "2001:db8::/32"]')
    try:
        return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in value)
    except ValueError as error:
        raise ValueError(f"is not a list of networks: {error}") from None


def _patterns(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError('must be a list of sender patterns, such as ["*@example.com", "<>"]')
    return tuple(v.strip().casefold() for v in value)


def _path(table: Table, key: str, readable: Callable[[Path], bool]) -> Path | None:
    text = table.text(key)
    if text is None:
        return None
    path = Path(text)
    if not readable(path):
        raise table.error(key, f"{text} is not a readable file")
    return path


def parse_tls(table: Table, readable: Callable[[Path], bool]) -> TlsSettings:
    certificate, key = _path(table, "certificate", readable), _path(table, "key", readable)
    if (certificate is None) != (key is None):
        raise table.error("certificate" if certificate is None else "key", "certificate and key go together")
    require = table.get("require_tls", bool, False)
    if require and certificate is None:
        raise table.error("require_tls", "needs a certificate and key")
    implicit = table.host_port("implicit_listen", None)
    if implicit is not None and certificate is None:
        raise table.error("implicit_listen", "needs a certificate and key")
    settings = TlsSettings(
        certificate=certificate,
        key=key,
        require_tls=require,
        implicit_listen=implicit,
        reload_seconds=table.duration("reload_seconds", TlsSettings.reload_seconds),
    )
    table.done()
    return settings


def parse_auth(table: Table, tls: TlsSettings, readable: Callable[[Path], bool]) -> AuthSettings:
    credentials = _path(table, "credentials", readable)
    if credentials is not None and not tls.enabled:
        raise table.error("credentials", "AUTH is offered only over TLS: configure [tls] certificate and key")
    settings = AuthSettings(
        credentials=credentials,
        max_failures=table.check(
            "max_failures", table.get("max_failures", int, AuthSettings.max_failures), _at_least_one
        ),
        failure_window=table.duration("failure_window", AuthSettings.failure_window),
    )
    table.done()
    return settings


def parse_access(table: Table, auth: AuthSettings) -> AccessSettings:
    without_auth = table.converted("without_auth", _networks, EVERYWHERE)
    if without_auth != EVERYWHERE and auth.credentials is None:
        raise table.error("without_auth", "the other networks would have no way in: configure [auth]")
    proxy = table.get("proxy_protocol", bool, False)
    no_networks: tuple[Network, ...] = ()
    trusted = table.converted("proxy_trusted", _networks, no_networks)
    if proxy and not trusted:
        raise table.error("proxy_trusted", "list the load balancers allowed to send the PROXY header")
    settings = AccessSettings(
        clients=table.converted("clients", _networks, EVERYWHERE),
        without_auth=without_auth,
        senders_allow=table.converted("senders_allow", _patterns, AccessSettings.senders_allow),
        senders_deny=table.converted("senders_deny", _patterns, AccessSettings.senders_deny),
        proxy_protocol=proxy,
        proxy_trusted=trusted,
        relay_networks=table.converted("relay_networks", _networks, AccessSettings.relay_networks),
    )
    table.done()
    return settings


def _at_least_one(value: float) -> str | None:
    return None if value >= 1 else "must be at least 1"


def parse_limits(table: Table, memory: int) -> LimitSettings:
    """The limits; ``max_connections`` defaults to what half of ``memory`` (the machine's) affords, from
    :data:`MIN_DEFAULT_CONNECTIONS` to :data:`MAX_DEFAULT_CONNECTIONS`. The floor holds even where memory is
    short: a relay opens 20 connections at once (``mail-gateway check`` warns). A value set in the file is
    held to the machine's memory; ``backlog`` defaults to twice ``max_connections``."""
    line = table.check(
        "max_line_length", table.size("max_line_length", LimitSettings.max_line_length), _at_least_one
    )
    per_connection = memory_per_connection(line)
    affordable = max(1, memory // CONNECTIONS_SHARE // per_connection)
    defaults = LimitSettings(
        max_connections=max(MIN_DEFAULT_CONNECTIONS, min(MAX_DEFAULT_CONNECTIONS, affordable))
    )
    values: dict[str, Any] = {}
    for key in (
        "max_connections",
        "max_connections_per_client",
        "max_mails_per_client_per_minute",
        "max_recipients",
        "max_mime_parts",
        "max_nesting",
        "max_junk_commands",
        "max_received_headers",
    ):
        values[key] = table.check(key, table.get(key, int, getattr(defaults, key)), _at_least_one)
    values["max_line_length"] = line
    if "backlog" in table.values:
        values["backlog"] = table.check("backlog", table.get("backlog", int, 0), _at_least_one)
    values["max_header_size"] = table.check(
        "max_header_size", table.size("max_header_size", defaults.max_header_size), _at_least_one
    )
    for key in ("command_timeout", "data_timeout"):
        values[key] = table.check(key, table.duration(key, getattr(defaults, key)), _at_least_one)
    settings = LimitSettings(**values)
    if "max_connections" in table.values and settings.max_connections * per_connection > memory:
        need = settings.max_connections * per_connection / 1024**2
        raise table.error(
            "max_connections",
            f"{settings.max_connections} connections may need {need:,.0f} MiB while mails arrive "
            f"({per_connection // 1024:,} KiB each), more than this machine's {memory / 1024**2:,.0f} MiB",
        )
    table.done()
    return settings


def parse_automatic(table: Table) -> AutomaticSettings:
    policy = table.choice("policy", AutomaticSettings.policy)
    table.done()
    return AutomaticSettings(policy=policy)
