"""SPF, DKIM, DMARC and ARC against a real DNS server on 127.0.0.1, on mail signed by dkimpy.

Each test publishes records for domains of its own (the resolver caches answers), then judges a mail as
the front door would, and looks at the result words, the attributes, the Authentication-Results record and
the reply.
"""

from __future__ import annotations

from collections.abc import Sequence

import dkim
import pytest

from gateway.mail import InMemoryContent
from gateway.observe.metrics import Metrics
from gateway.replies import Replies
from gateway.settings import AuthenticationSettings, FailAction, RouteSettings, TrustMode
from gateway.trust.judge import SessionFacts
from gateway.trust.results import Policy, Result, Source, TrustResult

from ..helpers import make_mail
from .conftest import MakeTrust, SigningKey
from .servers import TestDns

INTERNET = "192.0.2.5"  # the client, unless a test says otherwise
ELSEWHERE = "198.51.100.7"  # a client no SPF record of these tests names
ROUTE = RouteSettings(match="support@example.com", instance_id="i-1")
AUTHSERV = "mx.gateway.test"


def raw_mail(sender: str, text: str = "hello", headers: dict[str, str] | None = None) -> bytes:
    message = make_mail(sender=sender, text=text, message_id="<m1@client.test>", headers=headers)
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


def facts(sender: str, client: str = INTERNET, **changes: object) -> SessionFacts:
    values: dict[str, object] = {
        "client": client,
        "helo": "mail.client.test",
        "sender": sender,
        "recipients": ("support@example.com",),
    }
    values.update(changes)
    return SessionFacts(**values)  # type: ignore[arg-type]


async def judge(
    make_trust: MakeTrust,
    raw: bytes,
    session: SessionFacts,
    routes: Sequence[RouteSettings] = (ROUTE,),
    **settings: object,
) -> TrustResult:
    authentication = AuthenticationSettings(enabled=True, authserv_id=AUTHSERV, **settings)  # type: ignore[arg-type]
    return await make_trust(authentication).judge(InMemoryContent(raw), session, routes)


def publish_spf(dns: TestDns, domain: str, record: str = "v=spf1 ip4:192.0.2.0/24 -all") -> None:
    dns.add(domain, "TXT", record)


# --- SPF ----------------------------------------------------------------------------------------------


async def test_spf_pass(make_trust: MakeTrust, test_dns: TestDns) -> None:
    publish_spf(test_dns, "spf-pass.test")
    result = await judge(make_trust, raw_mail("bob@spf-pass.test"), facts("bob@spf-pass.test"))
    assert result.authentication is not None
    assert result.authentication.spf.result is Result.PASS
    assert result.attributes["gateway_spf"] == "pass"
    assert result.refusal is None
    assert result.authentication_results is not None
    assert result.authentication_results.startswith(f"{AUTHSERV}; spf=pass")
    assert "smtp.mailfrom=spf-pass.test" in result.authentication_results


async def test_spf_fail_without_dmarc_is_tagged_by_default(make_trust: MakeTrust, test_dns: TestDns) -> None:
    publish_spf(test_dns, "spf-fail.test")
    result = await judge(make_trust, raw_mail("bob@spf-fail.test"), facts("bob@spf-fail.test", ELSEWHERE))
    assert result.attributes["gateway_spf"] == "fail"
    assert result.attributes["gateway_dmarc"] == "none"
    assert result.refusal is None
    assert result.quarantine == ("spf",)
    assert result.attributes["gateway_quarantine"] == "spf"


async def test_spf_fail_refused_when_configured(make_trust: MakeTrust, test_dns: TestDns) -> None:
    publish_spf(test_dns, "spf-refuse.test")
    session = facts("bob@spf-refuse.test", ELSEWHERE)
    result = await judge(make_trust, raw_mail("bob@spf-refuse.test"), session, spf_fail=FailAction.REFUSE)
    assert result.refusal == Replies.SPF_REFUSED.format(domain="spf-refuse.test")
    assert (result.refusal.code, result.refusal.status) == (550, "5.7.1")


async def test_spf_softfail(make_trust: MakeTrust, test_dns: TestDns) -> None:
    publish_spf(test_dns, "spf-soft.test", "v=spf1 ip4:192.0.2.0/24 ~all")
    result = await judge(make_trust, raw_mail("bob@spf-soft.test"), facts("bob@spf-soft.test", ELSEWHERE))
    assert result.attributes["gateway_spf"] == "softfail"
    assert result.refusal is None
    assert result.quarantine == ()


async def test_spf_of_the_null_sender_is_the_helo_name(make_trust: MakeTrust, test_dns: TestDns) -> None:
    publish_spf(test_dns, "helo-spf.test")
    result = await judge(make_trust, raw_mail("daemon@helo-spf.test"), facts("", helo="helo-spf.test"))
    assert result.authentication is not None
    spf = result.authentication.spf
    assert (spf.result, spf.identity, spf.domain) == (Result.PASS, "helo", "helo-spf.test")
    assert "smtp.helo=helo-spf.test" in (result.authentication_results or "")


async def test_a_dns_timeout_is_a_temperror_never_a_crash(make_trust: MakeTrust, test_dns: TestDns) -> None:
    test_dns.timeout("spf-slow.test")
    test_dns.timeout("_dmarc.spf-slow.test")
    result = await judge(make_trust, raw_mail("bob@spf-slow.test"), facts("bob@spf-slow.test"))
    assert result.attributes["gateway_spf"] == "temperror"
    assert result.attributes["gateway_dmarc"] == "temperror"
    assert result.refusal is None


async def test_a_server_failure_is_a_temperror(make_trust: MakeTrust, test_dns: TestDns) -> None:
    test_dns.servfail("spf-broken.test")
    result = await judge(make_trust, raw_mail("bob@spf-broken.test"), facts("bob@spf-broken.test"))
    assert result.attributes["gateway_spf"] == "temperror"


# --- DKIM ---------------------------------------------------------------------------------------------


async def test_dkim_pass(make_trust: MakeTrust, test_dns: TestDns, signing_key: SigningKey) -> None:
    test_dns.add("sel._domainkey.dkim-pass.test", "TXT", signing_key.record)
    mail = signing_key.sign(raw_mail("alice@dkim-pass.test"), "dkim-pass.test")
    result = await judge(make_trust, mail, facts("alice@dkim-pass.test"))
    assert result.attributes["gateway_dkim"] == "pass"
    assert result.authentication is not None
    (signature,) = result.authentication.dkim
    assert (signature.domain, signature.selector) == ("dkim-pass.test", "sel")
    assert "dkim=pass header.d=dkim-pass.test header.s=sel header.b=" in (result.authentication_results or "")


async def test_dkim_body_altered_fails(
    make_trust: MakeTrust, test_dns: TestDns, signing_key: SigningKey
) -> None:
    test_dns.add("sel._domainkey.dkim-altered.test", "TXT", signing_key.record)
    mail = signing_key.sign(raw_mail("alice@dkim-altered.test", text="pay 10 EUR"), "dkim-altered.test")
    result = await judge(make_trust, mail.replace(b"pay 10 EUR", b"pay 99 EUR"), facts("a@dkim-altered.test"))
    assert result.attributes["gateway_dkim"] == "fail"


async def test_dkim_key_missing_is_a_permerror(
    make_trust: MakeTrust, test_dns: TestDns, signing_key: SigningKey
) -> None:
    mail = signing_key.sign(raw_mail("alice@dkim-nokey.test"), "dkim-nokey.test")
    result = await judge(make_trust, mail, facts("alice@dkim-nokey.test"))
    assert result.attributes["gateway_dkim"] == "permerror"


async def test_dkim_key_lookup_timeout_is_a_temperror(
    make_trust: MakeTrust, test_dns: TestDns, signing_key: SigningKey
) -> None:
    test_dns.timeout("sel._domainkey.dkim-slow.test")
    mail = signing_key.sign(raw_mail("alice@dkim-slow.test"), "dkim-slow.test")
    result = await judge(make_trust, mail, facts("alice@dkim-slow.test"))
    assert result.attributes["gateway_dkim"] == "temperror"


async def test_every_signature_is_verified(
    make_trust: MakeTrust, test_dns: TestDns, signing_key: SigningKey
) -> None:
    test_dns.add("sel._domainkey.dkim-two.test", "TXT", signing_key.record)
    once = signing_key.sign(raw_mail("alice@dkim-two.test"), "dkim-gone.test")
    twice = signing_key.sign(once, "dkim-two.test")
    result = await judge(make_trust, twice, facts("alice@dkim-two.test"))
    assert result.authentication is not None
    assert [(d.domain, d.result) for d in result.authentication.dkim] == [
        ("dkim-two.test", Result.PASS),
        ("dkim-gone.test", Result.PERMERROR),
    ]
    assert result.attributes["gateway_dkim"] == "pass"


async def test_unsigned_mail_has_no_dkim_result(make_trust: MakeTrust, test_dns: TestDns) -> None:
    result = await judge(make_trust, raw_mail("bob@unsigned.test"), facts("bob@unsigned.test"))
    assert result.attributes["gateway_dkim"] == "none"
    assert "dkim=none" in (result.authentication_results or "")


# --- DMARC --------------------------------------------------------------------------------------------


async def test_a_forged_from_of_a_reject_domain_is_refused(make_trust: MakeTrust, test_dns: TestDns) -> None:
    publish_spf(test_dns, "bank.test")
    test_dns.add("_dmarc.bank.test", "TXT", "v=DMARC1; p=reject")
    publish_spf(test_dns, "evil.test", "v=spf1 +all")
    metrics = Metrics()
    trust = make_trust(AuthenticationSettings(enabled=True, authserv_id=AUTHSERV), metrics=metrics)
    content = InMemoryContent(raw_mail("ceo@bank.test"))
    result = await trust.judge(content, facts("x@evil.test", ELSEWHERE), [ROUTE])
    counted = metrics.exposition().decode()
    assert 'mail_gateway_verdicts_total{check="dmarc",result="fail"} 1.0' in counted
    assert 'mail_gateway_verdicts_total{check="decision",result="dmarc_refused"} 1.0' in counted
    assert result.attributes["gateway_dmarc"] == "fail"
    assert result.attributes["gateway_dmarc_policy"] == "reject"
    assert result.refusal == Replies.DMARC_REFUSED.format(domain="bank.test")
    assert (result.refusal.code, result.refusal.status) == (550, "5.7.1")
    assert "dmarc=fail (p=reject dis=reject" in (result.authentication_results or "")


async def test_dmarc_passes_with_an_aligned_signature(
    make_trust: MakeTrust, test_dns: TestDns, signing_key: SigningKey
) -> None:
    test_dns.add("_dmarc.bank2.test", "TXT", "v=DMARC1; p=reject")
    test_dns.add("sel._domainkey.mail.bank2.test", "TXT", signing_key.record)
    mail = signing_key.sign(raw_mail("ceo@bank2.test"), "mail.bank2.test")  # relaxed: same org domain
    result = await judge(make_trust, mail, facts("bounce@esp.test", ELSEWHERE))
    assert result.attributes["gateway_dmarc"] == "pass"
    assert result.refusal is None


async def test_dmarc_passes_with_aligned_spf(make_trust: MakeTrust, test_dns: TestDns) -> None:
    test_dns.add("_dmarc.bank3.test", "TXT", "v=DMARC1; p=reject")
    publish_spf(test_dns, "bounce.bank3.test")
    result = await judge(make_trust, raw_mail("ceo@bank3.test"), facts("b@bounce.bank3.test"))
    assert result.attributes["gateway_dmarc"] == "pass"
    assert result.refusal is None


async def test_strict_alignment_needs_the_same_domain(
    make_trust: MakeTrust, test_dns: TestDns, signing_key: SigningKey
) -> None:
    test_dns.add("_dmarc.strict.test", "TXT", "v=DMARC1; p=reject; adkim=s; aspf=s")
    test_dns.add("sel._domainkey.mail.strict.test", "TXT", signing_key.record)
    mail = signing_key.sign(raw_mail("ceo@strict.test"), "mail.strict.test")
    result = await judge(make_trust, mail, facts("b@elsewhere.test", ELSEWHERE))
    assert result.attributes["gateway_dkim"] == "pass"
    assert result.attributes["gateway_dmarc"] == "fail"
    assert result.refusal is not None


async def test_dmarc_quarantine_is_tagged(make_trust: MakeTrust, test_dns: TestDns) -> None:
    test_dns.add("_dmarc.shop.test", "TXT", "v=DMARC1; p=quarantine")
    result = await judge(make_trust, raw_mail("sales@shop.test"), facts("x@other.test", ELSEWHERE))
    assert result.refusal is None
    assert result.attributes["gateway_dmarc"] == "fail"
    assert result.attributes["gateway_dmarc_policy"] == "quarantine"
    assert result.quarantine == ("dmarc",)


async def test_dmarc_quarantine_can_refuse(make_trust: MakeTrust, test_dns: TestDns) -> None:
    test_dns.add("_dmarc.shop2.test", "TXT", "v=DMARC1; p=quarantine")
    session = facts("x@other.test", ELSEWHERE)
    result = await judge(make_trust, raw_mail("s@shop2.test"), session, dmarc_quarantine=FailAction.REFUSE)
    assert result.refusal is not None
    assert result.refusal.code == 550


async def test_dmarc_none_is_only_recorded(make_trust: MakeTrust, test_dns: TestDns) -> None:
    test_dns.add("_dmarc.relaxed.test", "TXT", "v=DMARC1; p=none")
    publish_spf(test_dns, "relaxed.test")
    result = await judge(make_trust, raw_mail("a@relaxed.test"), facts("a@relaxed.test", ELSEWHERE))
    assert result.attributes["gateway_dmarc"] == "fail"
    assert result.attributes["gateway_dmarc_policy"] == "none"
    assert result.refusal is None
    assert result.quarantine == ("spf",)  # an SPF fail that DMARC did not decide


async def test_dmarc_none_with_alignment_passes(make_trust: MakeTrust, test_dns: TestDns) -> None:
    test_dns.add("_dmarc.relaxed2.test", "TXT", "v=DMARC1; p=none")
    publish_spf(test_dns, "relaxed2.test")
    result = await judge(make_trust, raw_mail("a@relaxed2.test"), facts("a@relaxed2.test"))
    assert result.attributes["gateway_dmarc"] == "pass"
    assert result.quarantine == ()


async def test_a_subdomain_follows_the_organizational_policy(
    make_trust: MakeTrust, test_dns: TestDns
) -> None:
    test_dns.add("_dmarc.parent.test", "TXT", "v=DMARC1; p=none; sp=reject")
    result = await judge(make_trust, raw_mail("a@news.parent.test"), facts("x@other.test", ELSEWHERE))
    assert result.authentication is not None
    dmarc = result.authentication.dmarc
    assert (dmarc.result, dmarc.policy, dmarc.disposition) == (Result.FAIL, Policy.REJECT, Policy.REJECT)
    assert result.refusal is not None


async def test_a_policy_lookup_timeout_is_a_temperror(make_trust: MakeTrust, test_dns: TestDns) -> None:
    test_dns.timeout("_dmarc.dmarc-slow.test")
    result = await judge(make_trust, raw_mail("a@dmarc-slow.test"), facts("x@other.test", ELSEWHERE))
    assert result.attributes["gateway_dmarc"] == "temperror"
    assert result.refusal is None


async def test_two_from_domains_get_the_strictest(make_trust: MakeTrust, test_dns: TestDns) -> None:
    test_dns.add("_dmarc.lenient.test", "TXT", "v=DMARC1; p=none")
    test_dns.add("_dmarc.guarded.test", "TXT", "v=DMARC1; p=reject")
    raw = raw_mail("a@lenient.test").replace(b"From: a@lenient.test", b"From: a@lenient.test, b@guarded.test")
    result = await judge(make_trust, raw, facts("x@other.test", ELSEWHERE))
    assert result.refusal == Replies.DMARC_REFUSED.format(domain="guarded.test")


# --- the policy's exceptions --------------------------------------------------------------------------


@pytest.fixture
def reject_domain(test_dns: TestDns) -> str:
    test_dns.add("_dmarc.guarded2.test", "TXT", "v=DMARC1; p=reject")
    return "guarded2.test"


async def test_monitor_mode_tags_what_it_would_refuse(make_trust: MakeTrust, reject_domain: str) -> None:
    session = facts("x@other.test", ELSEWHERE)
    result = await judge(make_trust, raw_mail(f"a@{reject_domain}"), session, mode=TrustMode.MONITOR)
    assert result.refusal is None
    assert result.quarantine == ("dmarc", "would-refuse")


async def test_one_monitoring_route_means_one_reply_for_all(
    make_trust: MakeTrust, reject_domain: str
) -> None:
    routes = (
        ROUTE,
        RouteSettings(match="sales@example.com", instance_id="i-1", trust_mode=TrustMode.MONITOR),
    )
    result = await judge(make_trust, raw_mail(f"a@{reject_domain}"), facts("x@other.test", ELSEWHERE), routes)
    assert result.refusal is None
    assert "would-refuse" in result.quarantine


async def test_an_allowed_sender_is_not_refused(make_trust: MakeTrust, reject_domain: str) -> None:
    session = facts("x@partner.test", ELSEWHERE)
    result = await judge(
        make_trust, raw_mail(f"a@{reject_domain}"), session, senders_allow=("*@partner.test",)
    )
    assert result.refusal is None
    assert result.attributes["gateway_dmarc"] == "fail"


async def test_an_authenticated_client_is_not_judged(make_trust: MakeTrust, reject_domain: str) -> None:
    session = facts("x@other.test", ELSEWHERE, authenticated_as="app-server")
    result = await judge(make_trust, raw_mail(f"a@{reject_domain}"), session)
    assert result.refusal is None
    assert result.authentication is not None
    assert result.authentication.source is Source.INTERNAL
    assert (result.authentication_results or "").startswith(
        f"{AUTHSERV}; auth=pass smtp.auth=app-server; spf=none"
    )


# --- ARC ----------------------------------------------------------------------------------------------


def sealed(raw: bytes, key: SigningKey, domain: str) -> bytes:
    with_results = (
        f"Authentication-Results: lists.{domain}; spf=pass smtp.mailfrom={domain}\r\n".encode() + raw
    )
    seal = dkim.arc_sign(
        with_results, b"sel", domain.encode(), key.private_pem, f"lists.{domain}".encode(),
        include_headers=[b"from", b"to", b"subject"],
    )  # fmt: skip
    return b"".join(seal) + with_results


async def test_arc_chain_passes(make_trust: MakeTrust, test_dns: TestDns, signing_key: SigningKey) -> None:
    test_dns.add("sel._domainkey.arc-list.test", "TXT", signing_key.record)
    result = await judge(
        make_trust, sealed(raw_mail("a@x.test"), signing_key, "arc-list.test"), facts("x@x.test")
    )
    assert result.attributes["gateway_arc"] == "pass"


async def test_arc_chain_broken_by_an_edit_fails(
    make_trust: MakeTrust, test_dns: TestDns, signing_key: SigningKey
) -> None:
    test_dns.add("sel._domainkey.arc-list2.test", "TXT", signing_key.record)
    mail = sealed(raw_mail("a@x.test", text="original"), signing_key, "arc-list2.test")
    result = await judge(make_trust, mail.replace(b"original", b"changed!"), facts("x@x.test"))
    assert result.attributes["gateway_arc"] == "fail"


# --- the edges ----------------------------------------------------------------------------------------


async def test_spf_follows_include_a_and_mx(make_trust: MakeTrust, test_dns: TestDns) -> None:
    publish_spf(test_dns, "chain.test", "v=spf1 include:_spf.chain.test -all")
    publish_spf(test_dns, "_spf.chain.test", "v=spf1 a:relay.chain.test mx:chain.test -all")
    test_dns.add("relay.chain.test", "A", "203.0.113.9")
    test_dns.add("chain.test", "MX", "10 mx.chain.test.")
    test_dns.add("mx.chain.test", "A", "203.0.113.25")
    test_dns.add("mx.chain.test", "AAAA", "2001:db8::25")
    for client in ("203.0.113.9", "203.0.113.25", "2001:db8::25"):
        result = await judge(make_trust, raw_mail("a@chain.test"), facts("a@chain.test", client))
        assert result.attributes["gateway_spf"] == "pass", client
    result = await judge(make_trust, raw_mail("a@chain.test"), facts("a@chain.test", "203.0.113.10"))
    assert result.attributes["gateway_spf"] == "fail"


async def test_a_client_without_an_address_has_no_spf(make_trust: MakeTrust) -> None:
    result = await judge(make_trust, raw_mail("a@x.test"), facts("a@x.test", "unix-socket"))
    assert result.authentication is not None
    assert (result.authentication.spf.result, result.authentication.spf.comment) == (
        Result.NONE,
        "no client address",
    )


async def test_an_unreadable_signature_is_a_permerror(make_trust: MakeTrust) -> None:
    raw = b"DKIM-Signature: v=1; this is not a signature\r\n" + raw_mail("a@broken-sig.test")
    result = await judge(make_trust, raw, facts("a@broken-sig.test"))
    assert result.attributes["gateway_dkim"] == "permerror"


async def test_a_mail_without_from_has_a_dmarc_permerror(make_trust: MakeTrust) -> None:
    raw = b"To: support@example.com\r\nSubject: no sender\r\n\r\nhello\r\n"
    result = await judge(make_trust, raw, facts("a@x.test"))
    assert result.attributes["gateway_dmarc"] == "permerror"
    assert result.refusal is None


async def test_nothing_configured_judges_nothing(test_dns: TestDns) -> None:
    from gateway.settings import AttachmentSettings, AwsSettings, Settings, SmtpSettings
    from gateway.trust.judge import Trust

    settings = Settings(SmtpSettings(), AwsSettings(), AttachmentSettings(bucket="b-1"), (ROUTE,))
    async with Trust.from_settings(settings) as trust:
        assert not trust.active
        result = await trust.judge(InMemoryContent(raw_mail("a@x.test")), facts("a@x.test"), [ROUTE])
    assert result == TrustResult()
    assert result.verdicts.headers == {} and result.verdicts.attributes == {}


async def test_blocking_dns_refuses_the_loops_own_thread(test_dns: TestDns) -> None:
    import asyncio

    from gateway.trust.dns import Blocking, Dns

    from .conftest import dns_settings

    blocking = Blocking(Dns(dns_settings(test_dns)), asyncio.get_running_loop(), 1.0)
    with pytest.raises(RuntimeError, match="event loop's own thread"):
        blocking.txt("x.test")
    assert await asyncio.to_thread(blocking.txt, "nothing-here.test") == []
