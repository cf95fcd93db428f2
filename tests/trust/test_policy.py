"""The policy as a pure function: verdicts and circumstances in, one reply (or tags) out."""

from __future__ import annotations

import json

import pytest

from gateway.replies import Replies, Reply
from gateway.settings import (
    AuthenticationSettings,
    EngineFailure,
    FailAction,
    FilterSettings,
    TrustMode,
    VirusAction,
)
from gateway.trust.greylist import Greylist
from gateway.trust.policy import Circumstances, decide, findings
from gateway.trust.results import (
    ArcResult,
    AuthResults,
    DkimResult,
    DmarcResult,
    InfectedFile,
    Policy,
    Result,
    Source,
    SpamResult,
    SpfResult,
    TrustResult,
    Verdict,
    VirusResult,
)

from ..helpers import Clock

ENFORCE = Circumstances(modes=(TrustMode.ENFORCE,))


def auth(dmarc: Result, disposition: Policy | None, spf: Result = Result.NONE) -> AuthResults:
    return AuthResults(
        SpfResult(spf, domain="x.test"),
        (),
        DmarcResult(dmarc, "x.test", disposition, disposition),
        ArcResult(Result.NONE),
    )


def outcome(
    a: AuthResults | None = None,
    s: SpamResult | None = None,
    v: VirusResult | None = None,
    circumstances: Circumstances = ENFORCE,
    authentication: AuthenticationSettings | None = None,
    filters: FilterSettings | None = None,
) -> tuple[Reply | None, tuple[str, ...]]:
    found = findings(
        a, s, v, circumstances, authentication or AuthenticationSettings(), filters or FilterSettings()
    )
    decision = decide(found, circumstances)
    return decision.refusal, decision.tags


DMARC_REJECT = Replies.DMARC_REFUSED.format(domain="x.test")
EICAR = VirusResult(Verdict.FAIL, ("Eicar",), (InfectedFile(0, "a.com", "00", "Eicar"),))


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        (outcome(auth(Result.FAIL, Policy.REJECT)), (DMARC_REJECT, ())),
        (outcome(auth(Result.FAIL, Policy.QUARANTINE)), (None, ("dmarc",))),
        (outcome(auth(Result.FAIL, Policy.NONE, Result.FAIL)), (None, ("spf",))),
        (outcome(auth(Result.PASS, Policy.NONE, Result.FAIL)), (None, ())),  # DMARC decided: SPF alone no
        (outcome(auth(Result.TEMPERROR, None, Result.TEMPERROR)), (None, ())),
        (
            outcome(
                auth(Result.FAIL, Policy.REJECT),
                authentication=AuthenticationSettings(dmarc_reject=FailAction.TAG),
            ),
            (None, ("dmarc",)),
        ),
        (
            outcome(
                auth(Result.FAIL, Policy.QUARANTINE),
                authentication=AuthenticationSettings(dmarc_quarantine=FailAction.REFUSE),
            ),
            (Replies.DMARC_QUARANTINE_REFUSED.format(domain="x.test"), ()),
        ),
        (outcome(s=SpamResult(Verdict.FAIL, "reject")), (Replies.SPAM_REFUSED, ())),
        (outcome(s=SpamResult(Verdict.GRAY, "soft reject")), (Replies.SPAM_DEFERRED, ())),
        (outcome(s=SpamResult(Verdict.GRAY, "greylist")), (Replies.GREYLISTED, ())),
        (outcome(s=SpamResult(Verdict.FAIL, "rewrite subject")), (None, ("spam",))),
        (outcome(s=SpamResult(Verdict.PASS, "no action")), (None, ())),
        (outcome(s=SpamResult(Verdict.PROCESSING_FAILED)), (None, ())),
        (
            outcome(
                s=SpamResult(Verdict.PROCESSING_FAILED),
                filters=FilterSettings(on_failure=EngineFailure.CLOSED),
            ),
            (Replies.CHECKS_UNAVAILABLE, ()),
        ),
        (outcome(v=EICAR), (Replies.VIRUS_REFUSED.format(signature="Eicar"), ())),
        (outcome(v=EICAR, filters=FilterSettings(virus=VirusAction.STRIP)), (None, ("virus",))),
        # the strictest wins: a permanent refusal over a deferral
        (
            outcome(auth(Result.FAIL, Policy.REJECT), SpamResult(Verdict.GRAY, "soft reject")),
            (DMARC_REJECT, ()),
        ),
        # an own sender with no trusted results is not judged for its authentication
        (
            outcome(
                AuthResults(
                    SpfResult(Result.FAIL),
                    (),
                    DmarcResult(Result.FAIL, "x.test", Policy.REJECT, Policy.REJECT),
                    ArcResult(Result.NONE),
                    Source.INTERNAL,
                )
            ),
            (None, ()),
        ),
    ],
)
def test_decisions(
    case: tuple[Reply | None, tuple[str, ...]], expected: tuple[Reply | None, tuple[str, ...]]
) -> None:
    assert case == expected


def test_monitor_or_an_allowed_sender_never_refuses() -> None:
    reject = auth(Result.FAIL, Policy.REJECT)
    monitored = Circumstances(modes=(TrustMode.ENFORCE, TrustMode.MONITOR))
    assert outcome(reject, circumstances=monitored) == (None, ("dmarc", "would-refuse"))
    allowed = Circumstances(modes=(TrustMode.ENFORCE,), allowlisted=True)
    assert outcome(reject, circumstances=allowed) == (None, ("dmarc", "would-refuse"))


def test_greylist_remembers_a_triplet() -> None:
    clock = Clock()
    greylist = Greylist(300.0, clock)
    assert not greylist.passes("192.0.2.5", "a@x.test", ["s@example.com"])
    clock.now = 299
    assert not greylist.passes("192.0.2.77", "a@x.test", ["s@example.com"])  # same /24
    assert not greylist.passes("192.0.2.5", "b@x.test", ["s@example.com"])  # another sender: first attempt
    clock.now = 301
    assert greylist.passes("192.0.2.5", "A@x.test", ["S@example.com"])
    assert Greylist(0, clock).passes("192.0.2.5", "a@x.test", [])


def test_a_result_survives_json() -> None:
    result = TrustResult(
        refusal=None,
        authentication=AuthResults(
            SpfResult(Result.PASS, "mailfrom", "x.test", "ok"),
            (DkimResult(Result.PASS, "x.test", "sel", "abc"),),
            DmarcResult(Result.PASS, "x.test", Policy.REJECT, Policy.NONE),
            ArcResult(Result.NONE),
            Source.UPSTREAM,
            "edge.test",
            "user",
        ),
        spam=SpamResult(Verdict.FAIL, "add header", 6.5, 15.0),
        virus=EICAR,
        authentication_results="mx.test; spf=pass",
        quarantine=("spam", "virus"),
        strip=EICAR.infected,
    )
    stored = json.loads(json.dumps(result.to_json()))
    assert TrustResult.from_json(stored) == result
    assert stored["attributes"]["gateway_quarantine"] == "spam virus"
    refused = TrustResult(refusal=Replies.SPAM_REFUSED)
    back = TrustResult.from_json(json.loads(json.dumps(refused.to_json())))
    assert back.refusal == Replies.SPAM_REFUSED
    assert back.refusal is not None and back.refusal.name == "spam_refused"
    assert back.headers == {} and back.attributes == {}
