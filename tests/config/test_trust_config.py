"""``[authentication]``, ``[filters]``, ``[dns]`` and a route's ``trust_mode``: defaults, values, and errors
that name their key."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from gateway.settings import (
    AuthenticationSettings,
    DnsSettings,
    EngineFailure,
    FailAction,
    FilterSettings,
    TrustMode,
    VirusAction,
)

from .test_config import config, error_of, parse_config


def test_everything_is_off_unless_configured() -> None:
    settings = parse_config(config())
    assert settings.authentication == AuthenticationSettings(authserv_id="mx.host.test")
    assert not settings.authentication.enabled
    assert settings.filters == FilterSettings()
    assert not settings.filters.enabled
    assert settings.dns == DnsSettings()
    assert settings.routes[0].trust_mode is None


def test_every_key_reaches_the_settings() -> None:
    settings = parse_config(
        config(
            authentication={
                "enabled": True,
                "authserv_id": "gw.example.com",
                "mode": "monitor",
                "dmarc_reject": "tag",
                "dmarc_quarantine": "refuse",
                "spf_fail": "refuse",
                "trusted_authserv_ids": ["Edge.Example.com"],
                "senders_allow": ["*@partner.example"],
                "timeout": "15s",
            },
            filters={
                "rspamd_url": "http://127.0.0.1:11333/",
                "rspamd_timeout": "5s",
                "spam_reject": "tag",
                "greylist_delay": "2m",
                "clamd_address": "unix:/run/clamav/clamd.ctl",
                "clamd_timeout": 10,
                "clamd_max_size": "20MiB",
                "virus": "strip",
                "on_failure": "closed",
            },
            dns={"nameservers": ["192.0.2.53", "127.0.0.1:5353", "[2001:db8::53]:53"], "timeout": "2s"},
            access={"relay_networks": ["10.0.0.0/8", "2001:db8::/32"]},  # the one list of own routers
            routes=[{"match": "support@example.com", "instance_id": "i-1", "trust_mode": "monitor"}],
        )
    )
    assert settings.access.relay_networks == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("2001:db8::/32"),
    )
    auth = settings.authentication
    assert auth == AuthenticationSettings(
        enabled=True,
        authserv_id="gw.example.com",
        mode=TrustMode.MONITOR,
        dmarc_reject=FailAction.TAG,
        dmarc_quarantine=FailAction.REFUSE,
        spf_fail=FailAction.REFUSE,
        trusted_authserv_ids=("edge.example.com",),
        senders_allow=("*@partner.example",),
        timeout=15.0,
    )
    assert settings.filters == FilterSettings(
        rspamd_url="http://127.0.0.1:11333",
        rspamd_timeout=5.0,
        spam_reject=FailAction.TAG,
        greylist_delay=120.0,
        clamd_address=Path("/run/clamav/clamd.ctl"),
        clamd_timeout=10.0,
        clamd_max_size=20 * 1024 * 1024,
        virus=VirusAction.STRIP,
        on_failure=EngineFailure.CLOSED,
    )
    assert settings.dns == DnsSettings(
        nameservers=(("192.0.2.53", 53), ("127.0.0.1", 5353), ("2001:db8::53", 53)), timeout=2.0
    )
    assert settings.routes[0].trust_mode is TrustMode.MONITOR
    tcp = parse_config(config(filters={"clamd_address": "127.0.0.1:3310"}))
    assert tcp.filters.clamd_address == ("127.0.0.1", 3310)


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"authentication": {"mode": "warn"}}, 'authentication.mode: must be "enforce" or "monitor"'),
        (
            {"authentication": {"dmarc_reject": "drop"}},
            'authentication.dmarc_reject: must be "refuse" or "tag"',
        ),
        (
            {"authentication": {"authserv_id": "mx example"}},
            "authentication.authserv_id: must be a host name",
        ),
        (
            {"authentication": {"relay_networks": ["10.0.0.0/8"]}},
            "authentication.relay_networks: unknown key",
        ),
        (
            {"authentication": {"authserv_id": "mx.a.test", "trusted_authserv_ids": ["MX.a.test"]}},
            "authentication.trusted_authserv_ids: names this gateway's own id",
        ),
        (
            {"authentication": {"trusted_authserv_ids": "edge"}},
            "authentication.trusted_authserv_ids: must be a list",
        ),
        ({"authentication": {"timeout": 0}}, "authentication.timeout: must be more than 0"),
        ({"authentication": {"dkim": True}}, "authentication.dkim: unknown key"),
        (
            {"filters": {"rspamd_url": "127.0.0.1:11333"}},
            "filters.rspamd_url: must be an http:// or https:// URL",
        ),
        (
            {"filters": {"clamd_address": "unix:clamd.ctl"}},
            "filters.clamd_address: a Unix socket must be an absolute",
        ),
        (
            {"filters": {"clamd_address": "clamd"}},
            'filters.clamd_address: must be "unix:/path" or "host:port"',
        ),
        ({"filters": {"clamd_address": 3310}}, "filters.clamd_address: must be"),
        ({"filters": {"virus": "quarantine"}}, 'filters.virus: must be "refuse" or "strip"'),
        ({"filters": {"on_failure": "accept"}}, 'filters.on_failure: must be "open" or "closed"'),
        ({"filters": {"clamd_max_size": 0}}, "filters.clamd_max_size: must be at least 1 byte"),
        (
            {"filters": {"rspamd_timeout": "10m"}},
            "filters.rspamd_timeout: must be more than 0 and at most 300",
        ),
        ({"dns": {"nameservers": ["dns.example.com"]}}, "dns.nameservers: 'dns.example.com': must be a list"),
        ({"dns": {"nameservers": "192.0.2.53"}}, "dns.nameservers: must be a list of IP addresses"),
        ({"dns": {"port": 53}}, "dns.port: unknown key"),
        (
            {"routes": [{"match": "a@example.com", "instance_id": "i", "trust_mode": "off"}]},
            'routes[0].trust_mode: must be "enforce" or "monitor"',
        ),
    ],
)
def test_bad_values_name_their_key(document: dict[str, Any], expected: str) -> None:
    assert error_of(config(**document)).startswith(expected)
