"""The verdict on one mail at DATA: sender authentication, spam and viruses at once, then the policy.

:class:`Trust` holds what lasts between mails (the resolver, the engines' clients, the greylist memory);
:meth:`Trust.judge` runs the three kinds of check concurrently, each within its own time budget, and turns
their findings into a :class:`~gateway.trust.results.TrustResult` through :mod:`.policy`. Nothing here
raises for what a mail or an engine does: a DNS failure is a ``temperror``, an engine that fails is
``PROCESSING_FAILED``.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import ipaddress
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import TypeVar

import aiohttp

from gateway.addresses import is_ip_literal
from gateway.mail import MailContent
from gateway.message.mime import ParsedMail, parse_mail, smtp_header_view
from gateway.observe.metrics import Metrics
from gateway.settings import (
    AuthenticationSettings,
    DnsSettings,
    FilterSettings,
    Network,
    RouteSettings,
    Settings,
)
from gateway.trust import authentication as checks
from gateway.trust.dns import Blocking, Dns, DnsLookup
from gateway.trust.filters import Clamd, EngineError, Rspamd
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
from gateway.trust.upstream import (
    format_results,
    topmost_trusted,
    upstream_arc,
    upstream_dkim,
    upstream_says_dmarc_pass,
    upstream_spf,
)

__all__ = ["SessionFacts", "Trust"]

log = logging.getLogger(__name__)

T = TypeVar("T")
SCANS_AT_ONCE = 4  # clamd connections per mail (clamd's own MaxThreads is 10 by default)
LATE = "no answer in time"


@dataclass(frozen=True)
class SessionFacts:
    """What the SMTP session knows of the mail's way here."""

    client: str  # the client's IP address (after PROXY)
    helo: str
    sender: str  # the envelope sender, "" for the null sender
    recipients: tuple[str, ...]
    authenticated_as: str | None = None  # the SMTP AUTH user
    queue_id: str = ""  # for rspamd's log


def _in_networks(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == network.version and ip in network for network in networks)


def _allowed(sender: str, patterns: Sequence[str]) -> bool:
    folded = sender.casefold()
    return any(
        (pattern == "<>" and not sender) or (bool(sender) and fnmatch.fnmatchcase(folded, pattern))
        for pattern in patterns
    )


def _header_section(raw: bytes) -> bytes:
    for separator in (b"\r\n\r\n", b"\n\n"):
        end = raw.find(separator)
        if end >= 0:
            return raw[: end + len(separator)]
    return raw


class Trust:
    """The checks of ``[authentication]`` and ``[filters]``; one for the whole gateway."""

    def __init__(
        self,
        authentication: AuthenticationSettings,
        filters: FilterSettings,
        dns: DnsSettings,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        lookup: DnsLookup | None = None,
        relay_networks: Sequence[Network] = (),
    ) -> None:
        self.authentication = authentication
        self._relay_networks = tuple(relay_networks)  # own mail routers: not judged as the internet is
        self.filters = filters
        self._dns_timeout = dns.timeout
        self._lookup = lookup if lookup is not None else Dns(dns)
        self._metrics = metrics
        self._greylist = Greylist(filters.greylist_delay, clock)
        self._session: aiohttp.ClientSession | None = None
        self._clamd = (
            None
            if filters.clamd_address is None
            else Clamd(filters.clamd_address, filters.clamd_timeout, filters.clamd_max_size)
        )

    def reconfigure(self, relay_networks: Sequence[Network]) -> None:
        """A reload's ``[access] relay_networks``: the one list that exempts own routers from the limits
        also exempts them from being judged as the internet is, so both change together."""
        self._relay_networks = tuple(relay_networks)

    @classmethod
    def from_settings(cls, settings: Settings, metrics: Metrics | None = None) -> Trust:
        return cls(
            settings.authentication,
            settings.filters,
            settings.dns,
            metrics=metrics,
            relay_networks=settings.access.relay_networks,
        )

    @property
    def active(self) -> bool:
        """Whether any check is configured (else :meth:`judge` has nothing to say)."""
        return self.authentication.enabled or self.filters.enabled

    @property
    def scans_files(self) -> bool:
        """Whether :meth:`judge` wants the mail's files (clamd is configured): the caller parses them in a
        reader process, within its budget, rather than here in a thread."""
        return self._clamd is not None

    async def __aenter__(self) -> Trust:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _rspamd(self) -> Rspamd | None:
        url = self.filters.rspamd_url
        if url is None:
            return None
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return Rspamd(url, self.filters.rspamd_timeout, self._session)

    async def judge(
        self,
        content: MailContent,
        facts: SessionFacts,
        routes: Sequence[RouteSettings],
        parsed: ParsedMail | None = None,
    ) -> TrustResult:
        """The verdict on one mail, before its reply. ``routes`` are those of its recipients (each may set
        its own mode); ``parsed`` is the mail as the front door already parsed it (else it is parsed here,
        in a thread, when clamd needs its files)."""
        raw = content.read()
        # The header as the front door reads it (a bare CR is no line end): the same From everyone sees.
        header = BytesHeaderParser(policy=compat32).parsebytes(smtp_header_view(_header_section(raw)))
        authenticated = facts.authenticated_as is not None
        own = authenticated or _in_networks(facts.client, self._relay_networks)
        auth, spam, virus = await asyncio.gather(
            _optional(self._authenticate(raw, header, facts, own) if self.authentication.enabled else None),
            _optional(self._spam(raw, facts) if self.filters.rspamd_url else None),
            _optional(self._viruses(raw, parsed) if self._clamd is not None else None),
        )
        greylist_passed = spam is not None and spam.action == "greylist"
        greylist_passed = greylist_passed and self._greylist.passes(
            facts.client, facts.sender, facts.recipients
        )
        circumstances = Circumstances(
            modes=tuple(route.trust_mode or self.authentication.mode for route in routes)
            or (self.authentication.mode,),
            authenticated=authenticated,
            allowlisted=_allowed(facts.sender, self.authentication.senders_allow),
            greylist_passed=greylist_passed,
        )
        decision = decide(
            findings(auth, spam, virus, circumstances, self.authentication, self.filters), circumstances
        )
        result = TrustResult(
            refusal=decision.refusal,
            authentication=auth,
            spam=spam,
            virus=virus,
            authentication_results=None
            if auth is None
            else format_results(self.authentication.authserv_id, auth),
            quarantine=decision.tags,
            strip=virus.infected if virus is not None and decision.refusal is None else (),
        )
        self._count(result)
        return result

    def _count(self, result: TrustResult) -> None:
        if self._metrics is None:
            return
        counter = self._metrics.verdicts
        for name in (
            "gateway_spf",
            "gateway_dkim",
            "gateway_dmarc",
            "gateway_arc",
            "gateway_spam",
            "gateway_virus",
        ):
            value = result.attributes.get(name)
            if value is not None:
                counter.labels(name.removeprefix("gateway_"), value).inc()
        if result.refusal is not None:
            counter.labels("decision", result.refusal.name).inc()
        elif result.quarantine:
            counter.labels("decision", "tagged").inc()

    # --- sender authentication -------------------------------------------------------------------------

    async def _authenticate(self, raw: bytes, header: Message, facts: SessionFacts, own: bool) -> AuthResults:
        settings = self.authentication
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.timeout
        blocking = Blocking(self._lookup, loop, self._dns_timeout)
        user = facts.authenticated_as
        if own:
            values = [str(v) for v in header.get_all("Authentication-Results", [])]
            claims = topmost_trusted(values, settings.trusted_authserv_ids, settings.authserv_id)
            if claims is None:  # an own sender with nothing trusted to go by: recorded, not judged
                dkim, arc = await self._signatures(raw, header, blocking, deadline)
                return AuthResults(
                    SpfResult(Result.NONE, comment="own sender: not checked"),
                    dkim,
                    DmarcResult(Result.NONE, comment="own sender: not evaluated"),
                    arc,
                    Source.INTERNAL,
                    auth_user=user,
                )
            spf, dkim, arc = upstream_spf(claims), upstream_dkim(claims), upstream_arc(claims)
            dmarc = await self._dmarc(raw, header, spf, dkim, deadline)
            if dmarc.result is not Result.PASS and upstream_says_dmarc_pass(claims):
                dmarc = replace(
                    dmarc, result=Result.PASS, disposition=Policy.NONE, comment=f"from {claims.authserv_id}"
                )
            return AuthResults(spf, dkim, dmarc, arc, Source.UPSTREAM, claims.authserv_id, user)
        spf, (dkim, arc) = await asyncio.gather(
            self._spf(facts, blocking, deadline), self._signatures(raw, header, blocking, deadline)
        )
        dmarc = await self._dmarc(raw, header, spf, dkim, deadline)
        return AuthResults(spf, dkim, dmarc, arc, Source.CHECKED, auth_user=user)

    async def _spf(self, facts: SessionFacts, blocking: Blocking, deadline: float) -> SpfResult:
        identity = "mailfrom" if facts.sender else "helo"
        domain = (facts.sender.rpartition("@")[2] if facts.sender else facts.helo).lower()
        if not is_ip_literal(facts.client):
            return SpfResult(Result.NONE, identity, domain, "no client address")
        budget = max(0.1, deadline - asyncio.get_running_loop().time())
        job = asyncio.to_thread(checks.check_spf, facts.client, facts.sender, facts.helo, blocking, budget)
        try:
            return await asyncio.wait_for(job, budget)
        except TimeoutError:
            return SpfResult(Result.TEMPERROR, identity, domain, LATE)

    async def _signatures(
        self, raw: bytes, header: Message, blocking: Blocking, deadline: float
    ) -> tuple[tuple[DkimResult, ...], ArcResult]:
        names = [(k, str(v)) for k, v in header.items()]
        has_dkim = any(k.lower() == "dkim-signature" for k, _ in names)
        has_arc = any(k.lower() == "arc-seal" for k, _ in names)
        if not has_dkim and not has_arc:
            return (), ArcResult(Result.NONE)
        loop = asyncio.get_running_loop()
        try:
            prefetched = await asyncio.wait_for(
                checks.prefetch_keys(self._lookup, checks.key_names(names)), max(0.1, deadline - loop.time())
            )
        except TimeoutError:
            prefetched = {}
        budget = max(0.1, deadline - loop.time())
        dkim_job = asyncio.to_thread(checks.check_dkim, raw, prefetched, blocking) if has_dkim else _empty()
        arc_job = asyncio.to_thread(checks.check_arc, raw, prefetched, blocking) if has_arc else _no_arc()
        try:
            dkim, arc = await asyncio.wait_for(asyncio.gather(dkim_job, arc_job), budget)
        except TimeoutError:
            dkim = (DkimResult(Result.TEMPERROR, comment=LATE),) if has_dkim else ()
            arc = ArcResult(Result.TEMPERROR, LATE) if has_arc else ArcResult(Result.NONE)
        return dkim, arc

    async def _dmarc(
        self, raw: bytes, header: Message, spf: SpfResult, dkim: Sequence[DkimResult], deadline: float
    ) -> DmarcResult:
        domains = checks.from_domains(header)
        sample = int.from_bytes(hashlib.sha256(raw).digest()[:4], "big") % 100
        budget = max(0.1, deadline - asyncio.get_running_loop().time())
        try:
            return await asyncio.wait_for(
                checks.evaluate_dmarc(self._lookup, domains, spf, dkim, sample), budget
            )
        except TimeoutError:
            return DmarcResult(Result.TEMPERROR, domains[0] if domains else "", comment=LATE)

    # --- the engines -----------------------------------------------------------------------------------

    async def _spam(self, raw: bytes, facts: SessionFacts) -> SpamResult:
        rspamd = self._rspamd()
        assert rspamd is not None
        try:
            async with asyncio.timeout(rspamd.timeout + 1):
                answer = await rspamd.check(
                    raw,
                    client=facts.client,
                    helo=facts.helo,
                    sender=facts.sender,
                    recipients=facts.recipients,
                    queue_id=facts.queue_id,
                    user=facts.authenticated_as,
                )
        except (EngineError, TimeoutError) as error:
            log.warning("spam check failed: %s", error or LATE)
            return SpamResult(Verdict.PROCESSING_FAILED, comment=str(error) or LATE)
        verdicts = {"no action": Verdict.PASS, "greylist": Verdict.GRAY, "soft reject": Verdict.GRAY}
        return SpamResult(
            verdicts.get(answer.action, Verdict.FAIL), answer.action, answer.score, answer.required_score
        )

    async def _viruses(self, raw: bytes, parsed: ParsedMail | None) -> VirusResult:
        clamd = self._clamd
        assert clamd is not None
        try:
            if parsed is None:
                parsed = await asyncio.wait_for(asyncio.to_thread(parse_mail, raw), clamd.timeout)
        except TimeoutError:
            return VirusResult(Verdict.PROCESSING_FAILED, comment="the mail could not be read in time")
        files = parsed.attachments
        digests = [hashlib.sha256(f.data).hexdigest() for f in files]
        unique = dict(zip(digests, (f.data for f in files), strict=True))
        gate = asyncio.Semaphore(SCANS_AT_ONCE)

        async def scan(data: bytes) -> str | EngineError | None:
            async with gate:
                try:
                    return await clamd.scan(data)
                except EngineError as error:
                    return error

        whole_fits = len(raw) <= clamd.max_size
        jobs = [scan(raw)] if whole_fits else []
        answers = await asyncio.gather(*jobs, *(scan(data) for data in unique.values()))
        whole = answers[0] if whole_fits else None
        by_digest = dict(zip(unique, answers[1:] if whole_fits else answers, strict=True))
        infected = tuple(
            InfectedFile(index, files[index].filename, digest, found)
            for index, digest in enumerate(digests)
            if isinstance(found := by_digest[digest], str)
        )
        signatures = [a for a in answers if isinstance(a, str)]
        failures = [a for a in answers if isinstance(a, EngineError)]
        if signatures:
            return VirusResult(
                Verdict.FAIL,
                tuple(dict.fromkeys(signatures)),
                infected,
                unattributed=isinstance(whole, str) and not infected,
            )
        if failures:
            log.warning("virus scan failed: %s", failures[0])
            return VirusResult(Verdict.PROCESSING_FAILED, comment=str(failures[0]))
        comment = "" if whole_fits else "too large to scan whole: its files were scanned"
        return VirusResult(Verdict.PASS, comment=comment)


async def _optional(job: Coroutine[None, None, T] | None) -> T | None:
    return None if job is None else await job


async def _empty() -> tuple[DkimResult, ...]:
    return ()


async def _no_arc() -> ArcResult:
    return ArcResult(Result.NONE)
