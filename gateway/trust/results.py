"""What the checks found, in the words of their standards, and what a contact carries of it.

Sender authentication speaks RFC 8601's result words (:class:`Result`); the engines speak SES's verdicts
(:class:`Verdict`: ``PASS``, ``FAIL``, ``GRAY``, ``PROCESSING_FAILED``), which ``StartEmailContact`` takes in
``X_SES_SPAM_VERDICT`` / ``X_SES_VIRUS_VERDICT``. A :class:`TrustResult` is a plain value: it becomes JSON
(:meth:`TrustResult.to_json`) to be stored beside the raw mail, which is never modified, and comes back
(:meth:`TrustResult.from_json`) to build the contact.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gateway.contact.request import Verdicts
from gateway.replies import Reply

__all__ = [
    "ATTRIBUTES",
    "ArcResult",
    "AuthResults",
    "DkimResult",
    "DmarcResult",
    "InfectedFile",
    "Policy",
    "Result",
    "Source",
    "SpamResult",
    "SpfResult",
    "TrustResult",
    "Verdict",
    "VirusResult",
]


class Result(StrEnum):
    """RFC 8601 result words (each method uses some of them)."""

    PASS = "pass"  # noqa: S105 - a result word, not a password
    FAIL = "fail"
    SOFTFAIL = "softfail"
    NEUTRAL = "neutral"
    NONE = "none"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"
    POLICY = "policy"

    @classmethod
    def read(cls, word: str) -> Result:
        """A word from an upstream's header; anything unknown is ``none`` (no claim made)."""
        return cls._value2member_map_.get(word.strip().lower(), cls.NONE)  # type: ignore[return-value]


class Verdict(StrEnum):
    """SES's verdict words, as Connect's ``X_SES_*_VERDICT`` headers take them."""

    PASS = "PASS"  # noqa: S105 - a verdict, not a password
    FAIL = "FAIL"
    GRAY = "GRAY"
    PROCESSING_FAILED = "PROCESSING_FAILED"


class Policy(StrEnum):
    """A DMARC policy (``p=`` / ``sp=``) and the disposition it leads to."""

    NONE = "none"
    QUARANTINE = "quarantine"
    REJECT = "reject"


class Source(StrEnum):
    """Where the authentication results come from."""

    CHECKED = "checked"  # this gateway checked the mail from the internet
    UPSTREAM = "upstream"  # a trusted upstream's Authentication-Results, from a relay or authenticated client
    INTERNAL = "internal"  # an own sender (relay network or SMTP AUTH) with no trusted results: not judged


@dataclass(frozen=True)
class SpfResult:
    result: Result
    identity: str = "mailfrom"  # "mailfrom", or "helo" for the null sender
    domain: str = ""
    comment: str = ""


@dataclass(frozen=True)
class DkimResult:
    result: Result
    domain: str = ""
    selector: str = ""
    signature: str = ""  # the first characters of b=, to tell signatures apart (RFC 6008)
    comment: str = ""


@dataclass(frozen=True)
class DmarcResult:
    result: Result
    from_domain: str = ""
    policy: Policy | None = None  # the domain's published policy (p=, or sp= for a subdomain)
    disposition: Policy | None = None  # what the policy asks of this mail, after pct=
    comment: str = ""


@dataclass(frozen=True)
class ArcResult:
    result: Result
    comment: str = ""


@dataclass(frozen=True)
class AuthResults:
    spf: SpfResult
    dkim: tuple[DkimResult, ...]
    dmarc: DmarcResult
    arc: ArcResult
    source: Source = Source.CHECKED
    upstream: str | None = None  # the authserv-id whose results were honoured
    auth_user: str | None = None  # the SMTP AUTH identity, when the client authenticated

    @property
    def dkim_result(self) -> Result:
        """One word for every signature: pass if one passes, else the first failure, else ``none``."""
        results = [d.result for d in self.dkim]
        for word in (Result.PASS, Result.FAIL, Result.PERMERROR, Result.TEMPERROR):
            if word in results:
                return word
        return Result.NONE


@dataclass(frozen=True)
class SpamResult:
    verdict: Verdict
    action: str = ""  # rspamd's action ("no action", "add header", ...), empty when it did not answer
    score: float | None = None
    required_score: float | None = None
    comment: str = ""


@dataclass(frozen=True)
class InfectedFile:
    """An attachment found infected: ``index`` into ``ParsedMail.attachments``, with its digest to be sure."""

    index: int
    filename: str
    sha256: str
    signature: str


@dataclass(frozen=True)
class VirusResult:
    verdict: Verdict
    signatures: tuple[str, ...] = ()
    infected: tuple[InfectedFile, ...] = ()
    unattributed: bool = False  # found in the message but in none of its files: it cannot be stripped
    comment: str = ""


# The contact attributes the gateway sets, and their values (the README documents them).
ATTRIBUTES = {
    "gateway_spf": "pass, fail, softfail, neutral, none, temperror, permerror",
    "gateway_dkim": "pass (a signature passed), fail, permerror, temperror, none (unsigned)",
    "gateway_dmarc": "pass, fail, none, temperror, permerror",
    "gateway_dmarc_policy": "none, quarantine, reject (when the From domain publishes a policy)",
    "gateway_arc": "pass, fail, none, temperror",
    "gateway_spam": "PASS, FAIL, GRAY, PROCESSING_FAILED",
    "gateway_spam_action": "rspamd's action: no action, greylist, add header, rewrite subject, ...",
    "gateway_spam_score": "rspamd's score, e.g. 7.50",
    "gateway_virus": "PASS, FAIL, PROCESSING_FAILED",
    "gateway_virus_found": "the signatures found, separated by ', '",
    "gateway_quarantine": "why the mail was delivered tagged: dmarc, spf, spam, virus, would-refuse",
}


@dataclass(frozen=True)
class TrustResult:
    """The verdicts on one mail, the reply they lead to, and what the contact carries of them."""

    refusal: Reply | None = None
    authentication: AuthResults | None = None
    spam: SpamResult | None = None
    virus: VirusResult | None = None
    authentication_results: str | None = None  # the RFC 8601 header value, with this gateway's authserv-id
    quarantine: tuple[str, ...] = ()  # why it is delivered tagged (gateway_quarantine)
    strip: tuple[InfectedFile, ...] = ()  # infected files to leave out of the contact and out of S3

    @property
    def headers(self) -> dict[str, str]:
        """``RawMessage.Headers`` entries (only the engines that were asked)."""
        headers: dict[str, str] = {}
        if self.spam is not None:
            headers["X_SES_SPAM_VERDICT"] = self.spam.verdict.value
        if self.virus is not None:
            headers["X_SES_VIRUS_VERDICT"] = self.virus.verdict.value
        return headers

    @property
    def attributes(self) -> dict[str, str]:
        attributes: dict[str, str] = {}
        auth = self.authentication
        if auth is not None:
            attributes["gateway_spf"] = auth.spf.result.value
            attributes["gateway_dkim"] = auth.dkim_result.value
            attributes["gateway_dmarc"] = auth.dmarc.result.value
            if auth.dmarc.policy is not None:
                attributes["gateway_dmarc_policy"] = auth.dmarc.policy.value
            attributes["gateway_arc"] = auth.arc.result.value
        if self.spam is not None:
            attributes["gateway_spam"] = self.spam.verdict.value
            if self.spam.action:
                attributes["gateway_spam_action"] = self.spam.action
            if self.spam.score is not None:
                attributes["gateway_spam_score"] = f"{self.spam.score:.2f}"
        if self.virus is not None:
            attributes["gateway_virus"] = self.virus.verdict.value
            if self.virus.signatures:
                attributes["gateway_virus_found"] = ", ".join(self.virus.signatures)
        if self.quarantine:
            attributes["gateway_quarantine"] = " ".join(self.quarantine)
        return attributes

    @property
    def verdicts(self) -> Verdicts:
        """What :func:`gateway.contact.request.build_request` takes."""
        return Verdicts(headers=self.headers, attributes=self.attributes)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values; the derived headers and attributes are included for readers (the staging
        page) and recomputed by :meth:`from_json`."""
        return {
            "refusal": None if self.refusal is None else _reply_json(self.refusal),
            "authentication": None if self.authentication is None else _auth_json(self.authentication),
            "spam": None if self.spam is None else _plain(self.spam),
            "virus": None if self.virus is None else _virus_json(self.virus),
            "authentication_results": self.authentication_results,
            "quarantine": list(self.quarantine),
            "strip": [_plain(f) for f in self.strip],
            "headers": self.headers,
            "attributes": self.attributes,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrustResult:
        refusal = data.get("refusal")
        auth = data.get("authentication")
        spam = data.get("spam")
        virus = data.get("virus")
        return cls(
            refusal=None if refusal is None else Reply(**refusal),
            authentication=None if auth is None else _auth_from(auth),
            spam=None if spam is None else SpamResult(**{**spam, "verdict": Verdict(spam["verdict"])}),
            virus=None if virus is None else _virus_from(virus),
            authentication_results=data.get("authentication_results"),
            quarantine=tuple(data.get("quarantine", ())),
            strip=tuple(InfectedFile(**f) for f in data.get("strip", ())),
        )


def _plain(value: Any) -> dict[str, Any]:
    return {name: getattr(value, name) for name in value.__dataclass_fields__}


def _reply_json(reply: Reply) -> dict[str, Any]:
    return {"code": reply.code, "status": reply.status, "text": reply.text, "name": reply.name}


def _auth_json(auth: AuthResults) -> dict[str, Any]:
    return {
        "spf": _plain(auth.spf),
        "dkim": [_plain(d) for d in auth.dkim],
        "dmarc": _plain(auth.dmarc),
        "arc": _plain(auth.arc),
        "source": auth.source.value,
        "upstream": auth.upstream,
        "auth_user": auth.auth_user,
    }


def _auth_from(data: Mapping[str, Any]) -> AuthResults:
    dmarc = dict(data["dmarc"])
    for key in ("policy", "disposition"):
        dmarc[key] = None if dmarc.get(key) is None else Policy(dmarc[key])
    return AuthResults(
        spf=SpfResult(**{**data["spf"], "result": Result(data["spf"]["result"])}),
        dkim=tuple(DkimResult(**{**d, "result": Result(d["result"])}) for d in data["dkim"]),
        dmarc=DmarcResult(**{**dmarc, "result": Result(dmarc["result"])}),
        arc=ArcResult(**{**data["arc"], "result": Result(data["arc"]["result"])}),
        source=Source(data["source"]),
        upstream=data.get("upstream"),
        auth_user=data.get("auth_user"),
    )


def _virus_json(virus: VirusResult) -> dict[str, Any]:
    return {
        **_plain(virus),
        "signatures": list(virus.signatures),
        "infected": [_plain(f) for f in virus.infected],
    }


def _virus_from(data: Mapping[str, Any]) -> VirusResult:
    return VirusResult(
        verdict=Verdict(data["verdict"]),
        signatures=tuple(data.get("signatures", ())),
        infected=tuple(InfectedFile(**f) for f in data.get("infected", ())),
        unattributed=bool(data.get("unattributed", False)),
        comment=data.get("comment", ""),
    )
