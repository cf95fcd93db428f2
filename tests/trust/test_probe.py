"""``mail-gateway check`` reaches the configured resolvers and engines, and names what does not answer."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from gateway.service.preflight import run_checks
from gateway.settings import (
    AttachmentSettings,
    AuthenticationSettings,
    AwsSettings,
    DnsSettings,
    FilterSettings,
    RouteSettings,
    Settings,
    SmtpSettings,
)

from ..helpers import free_port
from .conftest import dns_settings
from .servers import Clamd, Rspamd, TestDns

BASE = Settings(
    smtp=SmtpSettings(),
    aws=AwsSettings(),
    attachments=AttachmentSettings(bucket="b-1"),
    routes=(RouteSettings(match="*", instance_id="i-1"),),
    authentication=AuthenticationSettings(enabled=True),
)


async def test_check_reaches_dns_and_the_engines(
    test_dns: TestDns, rspamd_server: Rspamd, clamd_server: Clamd
) -> None:
    settings = replace(
        BASE,
        dns=dns_settings(test_dns),
        filters=FilterSettings(rspamd_url=rspamd_server.url, clamd_address=clamd_server.socket),
    )
    lines = [str(check) for check in await run_checks(settings)]
    assert lines[1:3] == [
        f"PASS dns 127.0.0.1:{test_dns.port}: answers",
        f"PASS rspamd {rspamd_server.url}: answers /ping",
    ]
    assert lines[3].startswith(f"PASS clamd unix:{clamd_server.socket}: answers (ClamAV ")


async def test_check_names_what_does_not_answer(tmp_path: Path) -> None:
    silent = free_port()
    settings = replace(
        BASE,
        dns=DnsSettings(nameservers=(("127.0.0.1", silent),), timeout=0.3),
        filters=FilterSettings(rspamd_url=f"http://127.0.0.1:{silent}", clamd_address=tmp_path / "none.sock"),
    )
    failures = [str(c) for c in await run_checks(settings) if c.status == "FAIL"]
    assert failures[:3] == [
        f"FAIL dns 127.0.0.1:{silent}: no answer: . NS: timed out",
        f"FAIL rspamd http://127.0.0.1:{silent}: rspamd: connection refused",
        f"FAIL clamd unix:{tmp_path / 'none.sock'}: clamd: no such file or directory",
    ]
