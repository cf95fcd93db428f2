"""Who sent it: SPF (RFC 7208), DKIM (RFC 6376), ARC (RFC 8617) and DMARC (RFC 7489).

pyspf and dkimpy are synchronous; they run in worker threads and ask DNS through
:class:`~gateway.trust.dns.Blocking` (the loop does the asking). The DKIM and ARC keys are fetched
asynchronously first, all at once, so that the threads seldom wait. This module is the one boundary for
both libraries: whatever they raise becomes a result word here (``temperror`` for DNS that did not answer,
``permerror`` for what can never verify), never an exception to the caller. DMARC is evaluated here, on the
public suffix list that ``publicsuffixlist`` ships (no download at run time).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import re
from collections.abc import Iterable, Sequence
from email.message import Message
from email.utils import getaddresses

import dkim
import dkim.util
import spf
from publicsuffixlist import PublicSuffixList

from gateway.trust.dns import Blocking, DnsLookup, TemporaryDnsError
from gateway.trust.results import ArcResult, DkimResult, DmarcResult, Policy, Result, SpfResult

__all__ = [
    "MAX_SIGNATURES",
    "check_arc",
    "check_dkim",
    "check_spf",
    "evaluate_dmarc",
    "from_domains",
    "key_names",
    "organizational_domain",
]

log = logging.getLogger(__name__)

MAX_SIGNATURES = 10  # DKIM signatures verified per mail; a hostile mail may carry thousands
SIGNATURE_TAG_CHARS = 12  # header.b: enough of b= to tell signatures apart
# dkimpy logs a missing key or a bad signature at ERROR: hostile input, not the gateway's error.
_LIBRARY_LOG = logging.getLogger("gateway.trust.dkimpy")
_LIBRARY_LOG.setLevel(logging.CRITICAL)

# pyspf looks names up through its module-level DNSLookup, whose own version calls a deprecated dnspython
# API and the system's resolver. It is replaced once, by a function that asks the Blocking resolver of the
# check running in this context (asyncio.to_thread carries the context into the thread).
_SPF_DNS: contextvars.ContextVar[Blocking] = contextvars.ContextVar("spf_dns")


def _spf_lookup(name: str, qtype: str, strict: object = True, timeout: float = 20) -> list[object]:
    blocking = _SPF_DNS.get(None)
    if blocking is None:
        raise spf.TempError("DNS: no resolver for this check")
    try:
        records = blocking.lookup(name, qtype)
    except TemporaryDnsError as error:
        raise spf.TempError(f"DNS {error}") from error
    return [((owner, kind), value) for owner, kind, value in records]


spf.DNSLookup = _spf_lookup


def check_spf(client: str, sender: str, helo: str, blocking: Blocking, budget: float) -> SpfResult:
    """SPF of the envelope sender's domain (of the HELO name for the null sender), from a thread."""
    identity = "mailfrom" if sender else "helo"
    domain = (sender.rpartition("@")[2] if sender else helo).lower()
    token = _SPF_DNS.set(blocking)
    try:
        word, explanation = spf.check2(i=client, s=sender, h=helo, querytime=budget)
    except Exception as error:  # pyspf on input it did not expect: not the sender's fault
        log.warning("SPF check failed unexpectedly: %s", type(error).__name__)
        return SpfResult(Result.TEMPERROR, identity, domain, "the check failed")
    finally:
        _SPF_DNS.reset(token)
    return SpfResult(Result.read(word), identity, domain, _comment(explanation))


def key_names(headers: Iterable[tuple[str, str]]) -> list[str]:
    """The ``selector._domainkey.domain`` names the DKIM and ARC signatures of a header section name."""
    names: list[str] = []
    wanted = ("dkim-signature", "arc-seal", "arc-message-signature")
    for name, value in headers:
        if name.lower() not in wanted:
            continue
        tags = _tags(value)
        if tags is not None and tags.get(b"s") and tags.get(b"d"):
            key = (
                f"{tags[b's'].decode('ascii', 'replace')}._domainkey.{tags[b'd'].decode('ascii', 'replace')}"
            )
            names.append(key.lower())
    return list(dict.fromkeys(names))[: 3 * MAX_SIGNATURES]


def _tags(value: str) -> dict[bytes, bytes] | None:
    try:
        tags: dict[bytes, bytes] = dkim.util.parse_tag_value(
            re.sub(r"\s+", "", value).encode("ascii", "replace")
        )
    except Exception:  # dkimpy's InvalidTagValueList and its kin: not a signature we can read
        return None
    return tags


class _Keys:
    """dkimpy's ``dnsfunc``: the prefetched keys first, else a blocking lookup; it records what it saw,
    because dkimpy answers a bare False for a bad signature and for a missing key alike."""

    def __init__(self, prefetched: dict[str, list[bytes] | TemporaryDnsError], blocking: Blocking) -> None:
        self._prefetched = prefetched
        self._blocking = blocking
        self.missing: set[str] = set()

    def __call__(self, name: bytes, timeout: float = 5) -> bytes | None:
        key = name.decode("ascii", "replace").rstrip(".").lower()
        answer = self._prefetched.get(key)
        if answer is None:
            answer = self._blocking.txt(key)
        if isinstance(answer, TemporaryDnsError):
            raise answer
        if not answer:
            self.missing.add(key)
            return None
        return answer[0]


async def prefetch_keys(
    lookup: DnsLookup, names: Sequence[str]
) -> dict[str, list[bytes] | TemporaryDnsError]:
    async def one(name: str) -> list[bytes] | TemporaryDnsError:
        try:
            return await lookup.txt(name)
        except TemporaryDnsError as error:
            return error

    answers = await asyncio.gather(*(one(name) for name in names))
    return dict(zip(names, answers, strict=True))


def check_dkim(
    raw: bytes, prefetched: dict[str, list[bytes] | TemporaryDnsError], blocking: Blocking
) -> tuple[DkimResult, ...]:
    """Every DKIM signature (up to :data:`MAX_SIGNATURES`), each with its own result; from a thread."""
    try:
        verifier = dkim.DKIM(raw, logger=_LIBRARY_LOG)
    except dkim.DKIMException as error:
        return (DkimResult(Result.PERMERROR, comment=_comment(f"message not readable: {error}")),)
    signatures = [value for name, value in verifier.headers if name.lower() == b"dkim-signature"]
    results: list[DkimResult] = []
    for index, header in enumerate(signatures[:MAX_SIGNATURES]):
        tags = _tags(header.decode("ascii", "replace")) or {}
        domain = tags.get(b"d", b"").decode("ascii", "replace").lower()
        selector = tags.get(b"s", b"").decode("ascii", "replace")
        short = tags.get(b"b", b"")[:SIGNATURE_TAG_CHARS].decode("ascii", "replace")
        keys = _Keys(prefetched, blocking)
        comment = ""
        try:
            verifier = dkim.DKIM(raw, logger=_LIBRARY_LOG)
            word = Result.PASS if verifier.verify(idx=index, dnsfunc=keys) else Result.FAIL
            if word is Result.FAIL and keys.missing:
                word, comment = Result.PERMERROR, "no key for signature"
        except TemporaryDnsError:
            word, comment = Result.TEMPERROR, "key lookup failed"
        except dkim.ValidationError as error:
            mismatch = "body hash mismatch" in str(error)
            word = Result.FAIL if mismatch else Result.PERMERROR
            comment = "body hash did not verify" if mismatch else _comment(str(error))
        except dkim.DKIMException as error:
            word, comment = Result.PERMERROR, _comment(str(error))
        except Exception as error:  # dkimpy on hostile input it did not expect
            log.warning("DKIM verification failed unexpectedly: %s", type(error).__name__)
            word, comment = Result.PERMERROR, "signature not readable"
        results.append(DkimResult(word, domain, selector, short, comment))
    return tuple(results)


def check_arc(
    raw: bytes, prefetched: dict[str, list[bytes] | TemporaryDnsError], blocking: Blocking
) -> ArcResult:
    """The ARC chain's validation (RFC 8617 §5.2), from a thread."""
    keys = _Keys(prefetched, blocking)
    try:
        outcome, _, reason = dkim.arc_verify(raw, logger=_LIBRARY_LOG, dnsfunc=keys)
    except TemporaryDnsError:
        return ArcResult(Result.TEMPERROR, "key lookup failed")
    except Exception as error:  # dkimpy on hostile input it did not expect
        log.warning("ARC verification failed unexpectedly: %s", type(error).__name__)
        return ArcResult(Result.FAIL, "chain not readable")
    if outcome == dkim.CV_Pass:
        return ArcResult(Result.PASS)
    if outcome == dkim.CV_None:
        return ArcResult(Result.NONE)
    return ArcResult(Result.FAIL, _comment(str(reason)))


def from_domains(header: Message) -> list[str]:
    """The domains of the From header (RFC 5322.From), which DMARC is about."""
    values = [str(value) for value in header.get_all("From", [])]
    domains = []
    for _, address in getaddresses(values):
        domain = address.rpartition("@")[2].strip().rstrip(".").lower()
        if "@" in address and domain:
            domains.append(domain)
    return list(dict.fromkeys(domains))


@functools.cache
def _suffixes() -> PublicSuffixList:
    return PublicSuffixList()


def organizational_domain(domain: str) -> str:
    """RFC 7489 §3.2: the registrable domain (one label below the public suffix)."""
    domain = domain.lower().rstrip(".")
    return _suffixes().privatesuffix(domain) or domain


def _aligned(a: str, b: str, strict: bool) -> bool:
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    return a == b if strict else organizational_domain(a) == organizational_domain(b)


async def _record(lookup: DnsLookup, domain: str) -> dict[str, str] | None:
    """The tags of ``_dmarc.<domain>``; None when there is no one valid record (RFC 7489 §6.6.3)."""
    records = [r.decode("utf-8", "replace") for r in await lookup.txt(f"_dmarc.{domain}")]
    records = [r for r in records if re.match(r"v\s*=\s*DMARC1\s*(;|$)", r)]
    if len(records) != 1:
        return None
    tags: dict[str, str] = {}
    for part in records[0].split(";"):
        name, equals, value = part.partition("=")
        if equals:
            tags.setdefault(name.strip().lower(), value.strip())
    return tags


def _policy(word: str | None) -> Policy | None:
    return Policy._value2member_map_.get((word or "").lower())  # type: ignore[return-value]


async def evaluate_dmarc(
    lookup: DnsLookup,
    domains: Sequence[str],
    spf_result: SpfResult,
    dkim_results: Sequence[DkimResult],
    sample: int,
) -> DmarcResult:
    """DMARC for each From domain; the strictest outcome (a mail with two From domains gets no easier
    treatment than either). ``sample`` (0-99, from the mail's digest) applies ``pct=`` the same way on every
    retry of the same mail."""
    if not domains:
        return DmarcResult(Result.PERMERROR, comment="no From address")
    outcomes = [await _evaluate_one(lookup, d, spf_result, dkim_results, sample) for d in domains]
    return max(outcomes, key=_severity)


def _severity(result: DmarcResult) -> tuple[int, int]:
    order = {Result.PASS: 0, Result.NONE: 1, Result.PERMERROR: 2, Result.TEMPERROR: 3, Result.FAIL: 4}
    dispositions = {None: 0, Policy.NONE: 0, Policy.QUARANTINE: 1, Policy.REJECT: 2}
    return order.get(result.result, 1), dispositions[result.disposition]


async def _evaluate_one(
    lookup: DnsLookup,
    from_domain: str,
    spf_result: SpfResult,
    dkim_results: Sequence[DkimResult],
    sample: int,
) -> DmarcResult:
    organizational = organizational_domain(from_domain)
    try:
        tags, at = await _record(lookup, from_domain), from_domain
        if tags is None and organizational != from_domain:
            tags, at = await _record(lookup, organizational), organizational
    except TemporaryDnsError:
        return DmarcResult(Result.TEMPERROR, from_domain, comment="policy lookup failed")
    if tags is None:
        return DmarcResult(Result.NONE, from_domain)
    policy = _policy(tags.get("p"))
    if policy is None:  # §6.6.3: a record without a valid p= counts as p=none when it asks for reports
        if "rua" not in tags:
            return DmarcResult(Result.NONE, from_domain, comment="record without a valid policy")
        policy = Policy.NONE
    if at != from_domain:
        policy = _policy(tags.get("sp")) or policy
    strict_dkim = tags.get("adkim", "r").lower() == "s"
    strict_spf = tags.get("aspf", "r").lower() == "s"
    dkim_aligned = any(
        d.result is Result.PASS and d.domain and _aligned(from_domain, d.domain, strict_dkim)
        for d in dkim_results
    )
    spf_aligned = spf_result.result is Result.PASS and _aligned(from_domain, spf_result.domain, strict_spf)
    if dkim_aligned or spf_aligned:
        return DmarcResult(Result.PASS, from_domain, policy, Policy.NONE)
    try:
        percent = max(0, min(100, int(tags.get("pct", "100"))))
    except ValueError:
        percent = 100
    disposition = policy
    if sample >= percent:  # outside pct=: one step milder (RFC 7489 §6.6.4)
        disposition = Policy.QUARANTINE if policy is Policy.REJECT else Policy.NONE
    return DmarcResult(Result.FAIL, from_domain, policy, disposition, "not aligned")


def _comment(text: str, limit: int = 200) -> str:
    """A library's explanation, made safe for a header comment: one line, no parentheses, bounded."""
    cleaned = " ".join(re.sub(r"[()\\\x00-\x1f\x7f]", " ", text).split())
    return cleaned[:limit]
