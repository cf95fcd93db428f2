"""Authentication-Results from upstream: believed only from own clients, topmost, with a trusted id; every
other one (a forgery from the internet, a second header, an unknown id, the gateway's own id) is ignored."""

from __future__ import annotations

import ipaddress

from gateway.mail import InMemoryContent
from gateway.replies import Replies
from gateway.settings import AuthenticationSettings, RouteSettings
from gateway.trust.judge import SessionFacts
from gateway.trust.results import Result, Source, TrustResult
from gateway.trust.upstream import parse_results, topmost_trusted

from ..helpers import make_mail
from .conftest import MakeTrust
from .servers import TestDns

RELAY = "10.1.2.3"
RELAYS = (ipaddress.ip_network("10.0.0.0/8"),)  # [access] relay_networks
ROUTE = RouteSettings(match="support@example.com", instance_id="i-1")
SETTINGS = AuthenticationSettings(
    enabled=True,
    authserv_id="mx.gateway.test",
    trusted_authserv_ids=("edge.corp.test",),
)


def test_a_header_is_read_with_its_comments_and_quotes() -> None:
    claims = parse_results(
        'Edge.Corp.test 1; spf=pass (sender ok) smtp.mailfrom="a b"@x.test;\r\n dkim = fail (bad; sig) '
        "header.d=x.test header.s=s1; dmarc=pass (p=reject) header.from=x.test; arc=none"
    )
    assert claims is not None
    assert claims.authserv_id == "edge.corp.test"
    assert [(c.method, c.result) for c in claims.claims] == [
        ("spf", Result.PASS),
        ("dkim", Result.FAIL),
        ("dmarc", Result.PASS),
        ("arc", Result.NONE),
    ]
    assert claims.of("spf")[0].get("smtp.mailfrom") == '"a b"@x.test'  # an addr-spec, kept whole
    assert claims.of("dkim")[0].get("header.s") == "s1"


def test_only_the_topmost_header_with_a_trusted_id_counts() -> None:
    first = "other.test; spf=pass smtp.mailfrom=x.test"
    second = "edge.corp.test; spf=pass smtp.mailfrom=x.test"
    assert topmost_trusted([first, second], ["edge.corp.test"], "mx.gateway.test") is None
    assert topmost_trusted([second, first], ["edge.corp.test"], "mx.gateway.test") is not None
    # the gateway's own id is never believed from a mail
    own = "mx.gateway.test; spf=pass smtp.mailfrom=x.test"
    assert topmost_trusted([own], ["mx.gateway.test"], "mx.gateway.test") is None
    assert parse_results("   ") is None


def test_escapes_inside_quotes_and_comments() -> None:
    claims = parse_results(
        'edge.test; dkim=pass (a \\) comment (nested \\( one)) header.d=x.test header.b="ab\\"c"; none'
    )
    assert claims is not None
    assert claims.of("dkim")[0].get("header.d") == "x.test"
    assert claims.of("dkim")[0].get("header.b") == 'ab"c'


def forged(domain: str, results: str) -> bytes:
    message = make_mail(sender=f"ceo@{domain}", message_id="<u1@client.test>")
    raw = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
    return f"Authentication-Results: {results}\r\n".encode() + raw


async def judge(make_trust: MakeTrust, raw: bytes, client: str, sender: str = "x@evil.test") -> TrustResult:
    session = SessionFacts(client, "h.test", sender, ("support@example.com",))
    trust = make_trust(SETTINGS, relay_networks=RELAYS)
    return await trust.judge(InMemoryContent(raw), session, [ROUTE])


async def test_a_forged_header_from_the_internet_is_ignored(make_trust: MakeTrust, test_dns: TestDns) -> None:
    test_dns.add("_dmarc.forged.test", "TXT", "v=DMARC1; p=reject")
    raw = forged("forged.test", "edge.corp.test; spf=pass smtp.mailfrom=forged.test; dmarc=pass")
    result = await judge(make_trust, raw, "198.51.100.7")
    assert result.authentication is not None
    assert result.authentication.source is Source.CHECKED
    assert result.refusal == Replies.DMARC_REFUSED.format(domain="forged.test")


async def test_a_relay_header_with_an_unknown_id_is_ignored(make_trust: MakeTrust, test_dns: TestDns) -> None:
    test_dns.add("_dmarc.forged2.test", "TXT", "v=DMARC1; p=reject")
    raw = forged("forged2.test", "someone.test; spf=fail smtp.mailfrom=forged2.test")
    result = await judge(make_trust, raw, RELAY)
    assert result.authentication is not None
    assert result.authentication.source is Source.INTERNAL  # an own relay: recorded, not judged
    assert result.attributes["gateway_spf"] == "none"
    assert result.refusal is None


async def test_a_trusted_upstream_is_honoured(make_trust: MakeTrust, test_dns: TestDns) -> None:
    test_dns.add("_dmarc.partner.test", "TXT", "v=DMARC1; p=reject")
    raw = forged("partner.test", "edge.corp.test; spf=pass smtp.mailfrom=bounce@partner.test; dkim=none")
    result = await judge(make_trust, raw, RELAY, sender="bounce@partner.test")
    auth = result.authentication
    assert auth is not None
    assert (auth.source, auth.upstream) == (Source.UPSTREAM, "edge.corp.test")
    assert result.attributes["gateway_spf"] == "pass"
    assert result.attributes["gateway_dmarc"] == "pass"  # evaluated here, on the upstream's SPF result
    assert result.refusal is None
    assert (result.authentication_results or "").startswith("mx.gateway.test; spf=pass (from edge.corp.test)")


async def test_a_trusted_upstream_failure_applies_the_policy(
    make_trust: MakeTrust, test_dns: TestDns
) -> None:
    test_dns.add("_dmarc.spoofed.test", "TXT", "v=DMARC1; p=reject")
    raw = forged("spoofed.test", "edge.corp.test; spf=fail smtp.mailfrom=spoofed.test; dkim=none")
    result = await judge(make_trust, raw, RELAY)
    assert result.refusal == Replies.DMARC_REFUSED.format(domain="spoofed.test")
