"""The sender checks' and engines' settings: ``[authentication]``, ``[filters]`` and ``[dns]``.

All of it is off unless configured: ``[authentication] enabled = true`` turns on SPF, DKIM, DMARC and ARC
(they need DNS, and a relay in front of the gateway needs ``relay_networks`` first); ``rspamd_url`` and
``clamd_address`` each turn on their engine.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from gateway.config.frontdoor import _patterns
from gateway.config.table import Table, split_host_port
from gateway.settings import (
    AuthenticationSettings,
    ClamdAddress,
    DnsSettings,
    FilterSettings,
    TrustMode,
)

__all__ = ["parse_authentication", "parse_dns", "parse_filters", "parse_route_trust_mode"]

MAX_TIMEOUT = 300.0  # a check that takes longer than this holds the client past its own DATA timeout


def _timeout(table: Table, key: str, default: float) -> float:
    value = table.duration(key, default)
    if not 0 < value <= MAX_TIMEOUT:
        raise table.error(key, f"must be more than 0 and at most {MAX_TIMEOUT:.0f} seconds")
    return value


def _authserv_id(value: str) -> str | None:
    ok = value and value.isascii() and all(c.isalnum() or c in ".-_" for c in value)
    return None if ok else "must be a host name such as mx.example.com"


def _ids(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and not _authserv_id(v) for v in value):
        raise ValueError('must be a list of authserv-ids (host names), such as ["mx1.example.com"]')
    return tuple(v.lower() for v in value)


def parse_authentication(table: Table, hostname: str) -> AuthenticationSettings:
    """The checks' own keys; the mail routers they trust are ``[access] relay_networks``."""
    defaults = AuthenticationSettings(authserv_id=hostname)
    authserv_id = table.check("authserv_id", table.get("authserv_id", str, hostname), _authserv_id)
    no_ids: tuple[str, ...] = ()
    trusted = table.converted("trusted_authserv_ids", _ids, no_ids)
    if authserv_id.lower() in trusted:
        raise table.error(
            "trusted_authserv_ids", f"names this gateway's own id ({authserv_id}): anyone could forge it"
        )
    settings = AuthenticationSettings(
        enabled=table.get("enabled", bool, defaults.enabled),
        authserv_id=authserv_id,
        mode=table.choice("mode", defaults.mode),
        dmarc_reject=table.choice("dmarc_reject", defaults.dmarc_reject),
        dmarc_quarantine=table.choice("dmarc_quarantine", defaults.dmarc_quarantine),
        spf_fail=table.choice("spf_fail", defaults.spf_fail),
        trusted_authserv_ids=trusted,
        senders_allow=table.converted("senders_allow", _patterns, defaults.senders_allow),
        timeout=_timeout(table, "timeout", defaults.timeout),
    )
    table.done()
    return settings


def _clamd_address(value: Any) -> ClamdAddress | None:
    if not isinstance(value, str):
        raise ValueError('must be "unix:/path/to/clamd.ctl" or "host:port"')
    if not value:
        return None
    if value.startswith("unix:"):
        path = value.removeprefix("unix:")
        if not path.startswith("/"):
            raise ValueError('a Unix socket must be an absolute path: "unix:/run/clamav/clamd.ctl"')
        return Path(path)
    try:
        return split_host_port(value)
    except ValueError as error:
        raise ValueError(f'must be "unix:/path" or "host:port": {error}') from None


def _rspamd_url(value: str | None) -> str | None:
    if value is None or value.startswith(("http://", "https://")):
        return None
    return 'must be an http:// or https:// URL, such as "http://127.0.0.1:11333"'


def parse_filters(table: Table) -> FilterSettings:
    defaults = FilterSettings()
    rspamd_url = table.check("rspamd_url", table.text("rspamd_url"), _rspamd_url)
    clamd_address = table.converted("clamd_address", _clamd_address, None)
    max_size = table.size("clamd_max_size", defaults.clamd_max_size)
    if max_size < 1:
        raise table.error("clamd_max_size", "must be at least 1 byte")
    settings = FilterSettings(
        rspamd_url=rspamd_url.rstrip("/") if rspamd_url else None,
        rspamd_timeout=_timeout(table, "rspamd_timeout", defaults.rspamd_timeout),
        spam_reject=table.choice("spam_reject", defaults.spam_reject),
        greylist_delay=table.duration("greylist_delay", defaults.greylist_delay),
        clamd_address=clamd_address,
        clamd_timeout=_timeout(table, "clamd_timeout", defaults.clamd_timeout),
        clamd_max_size=max_size,
        virus=table.choice("virus", defaults.virus),
        on_failure=table.choice("on_failure", defaults.on_failure),
    )
    table.done()
    return settings


def _nameservers(value: Any) -> tuple[tuple[str, int], ...]:
    message = 'must be a list of IP addresses, optionally with a port: ["192.0.2.53", "[2001:db8::53]:5353"]'
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(message)
    servers = []
    for text in value:
        host, port = text.strip(), 53
        try:
            ipaddress.ip_address(host)
        except ValueError:
            try:
                host, port = split_host_port(host)
                ipaddress.ip_address(host)
            except ValueError:
                raise ValueError(f"{text!r}: {message}") from None
        servers.append((host, port))
    return tuple(servers)


def parse_dns(table: Table) -> DnsSettings:
    defaults = DnsSettings()
    settings = DnsSettings(
        nameservers=table.converted("nameservers", _nameservers, defaults.nameservers),
        timeout=_timeout(table, "timeout", defaults.timeout),
    )
    table.done()
    return settings


def parse_route_trust_mode(table: Table) -> TrustMode | None:
    """A route's own ``trust_mode`` ("enforce" or "monitor"); absent: ``[authentication] mode``."""
    if "trust_mode" not in table.values:
        table.used.add("trust_mode")
        return None
    return table.choice("trust_mode", TrustMode.ENFORCE)
