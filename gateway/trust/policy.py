"""Verdicts into one decision: refuse (with which reply), defer, or deliver tagged: a pure function.

Every check only says what it found; this module alone says what that means, with one vocabulary of
actions (:class:`Action`, from mildest to strictest) and the configured choice for each finding:

=====================================================  =============================================
finding                                                action (default; configurable)
=====================================================  =============================================
DMARC fail, the domain's disposition ``reject``        refuse ``550 5.7.1`` (``dmarc_reject``)
DMARC fail, disposition ``quarantine``                 tag (``dmarc_quarantine``)
SPF ``fail`` that no DMARC policy decided              tag (``spf_fail``)
rspamd ``reject``                                      refuse ``550 5.7.1`` (``spam_reject``)
rspamd ``soft reject``                                 defer ``451 4.7.1``
rspamd ``greylist``                                    defer ``451 4.7.1`` until a retry after the delay
rspamd ``add header``, ``rewrite subject``, ...        tag (``X_SES_SPAM_VERDICT: FAIL``)
a virus                                                refuse ``554 5.7.1``, or strip (``virus``)
an engine failed or timed out                          deliver (``PROCESSING_FAILED``), or defer ``451 4.3.0``
=====================================================  =============================================

The strictest action wins (a refusal over a deferral). One DATA reply serves every route: the mail is
refused only when every route's mode is ``enforce``; a ``monitor`` route, or a sender on the allow list,
turns the refusal into a tag (``would-refuse``). Own senders (relay networks, authenticated clients) are not
refused for their authentication, and authenticated senders not for spam (they are tagged). Infected files
that are known are left out of any mail that is delivered, whatever the mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from gateway.replies import Replies, Reply
from gateway.settings import (
    AuthenticationSettings,
    EngineFailure,
    FailAction,
    FilterSettings,
    TrustMode,
    VirusAction,
)
from gateway.trust.results import AuthResults, Policy, Result, Source, SpamResult, Verdict, VirusResult

__all__ = ["Action", "Circumstances", "Decision", "Finding", "decide", "findings"]

WOULD_REFUSE = "would-refuse"


class Action(IntEnum):
    TAG = 1
    STRIP = 2
    DEFER = 3
    REFUSE = 4


@dataclass(frozen=True)
class Finding:
    action: Action
    tag: str  # dmarc, spf, spam, virus
    reply: Reply | None = None  # for DEFER and REFUSE


@dataclass(frozen=True)
class Circumstances:
    """What the policy needs to know of the session besides the verdicts."""

    modes: tuple[TrustMode, ...]  # each route's mode
    authenticated: bool = False
    allowlisted: bool = False
    greylist_passed: bool = False


@dataclass(frozen=True)
class Decision:
    refusal: Reply | None
    tags: tuple[str, ...]


def _choice(choice: FailAction, tag: str, reply: Reply) -> Finding:
    return Finding(Action.REFUSE, tag, reply) if choice is FailAction.REFUSE else Finding(Action.TAG, tag)


def _authentication(auth: AuthResults, settings: AuthenticationSettings) -> list[Finding]:
    if auth.source is Source.INTERNAL:
        return []
    dmarc = auth.dmarc
    if dmarc.result is Result.FAIL and dmarc.disposition is Policy.REJECT:
        return [
            _choice(settings.dmarc_reject, "dmarc", Replies.DMARC_REFUSED.format(domain=dmarc.from_domain))
        ]
    if dmarc.result is Result.FAIL and dmarc.disposition is Policy.QUARANTINE:
        return [
            _choice(
                settings.dmarc_quarantine,
                "dmarc",
                Replies.DMARC_QUARANTINE_REFUSED.format(domain=dmarc.from_domain),
            )
        ]
    if dmarc.result is not Result.PASS and auth.spf.result is Result.FAIL:
        return [_choice(settings.spf_fail, "spf", Replies.SPF_REFUSED.format(domain=auth.spf.domain))]
    return []


def _spam(spam: SpamResult, settings: FilterSettings, circumstances: Circumstances) -> list[Finding]:
    if spam.verdict is Verdict.PROCESSING_FAILED:
        return _failed(settings)
    action = spam.action
    found: Finding | None = None
    if action == "reject":
        found = _choice(settings.spam_reject, "spam", Replies.SPAM_REFUSED)
    elif action == "soft reject":
        found = Finding(Action.DEFER, "spam", Replies.SPAM_DEFERRED)
    elif action == "greylist":
        passed = circumstances.greylist_passed
        found = Finding(Action.TAG, "spam") if passed else Finding(Action.DEFER, "spam", Replies.GREYLISTED)
    elif action != "no action":
        found = Finding(Action.TAG, "spam")
    if found is None:
        return []
    if circumstances.authenticated and found.action > Action.TAG:  # an own user: told, not refused
        found = Finding(Action.TAG, "spam")
    return [found]


def _virus(virus: VirusResult, settings: FilterSettings) -> list[Finding]:
    if virus.verdict is Verdict.PROCESSING_FAILED:
        return _failed(settings)
    if virus.verdict is not Verdict.FAIL:
        return []
    reply = Replies.VIRUS_REFUSED.format(signature=", ".join(virus.signatures) or "unnamed")
    if settings.virus is VirusAction.STRIP and virus.infected and not virus.unattributed:
        return [Finding(Action.STRIP, "virus")]
    return [Finding(Action.REFUSE, "virus", reply)]


def _failed(settings: FilterSettings) -> list[Finding]:
    if settings.on_failure is EngineFailure.CLOSED:
        return [Finding(Action.DEFER, "unchecked", Replies.CHECKS_UNAVAILABLE)]
    return []


def findings(
    auth: AuthResults | None,
    spam: SpamResult | None,
    virus: VirusResult | None,
    circumstances: Circumstances,
    authentication: AuthenticationSettings,
    filters: FilterSettings,
) -> list[Finding]:
    found: list[Finding] = []
    if auth is not None:
        found += _authentication(auth, authentication)
    if spam is not None:
        found += _spam(spam, filters, circumstances)
    if virus is not None:
        found += _virus(virus, filters)
    return found


def decide(found: Sequence[Finding], circumstances: Circumstances) -> Decision:
    """The one reply for the mail, or the tags it is delivered with."""
    strictest = max(found, key=lambda f: f.action, default=None)
    enforce = bool(circumstances.modes) and not circumstances.allowlisted
    enforce = enforce and all(mode is TrustMode.ENFORCE for mode in circumstances.modes)
    if strictest is not None and strictest.action >= Action.DEFER and enforce:
        return Decision(strictest.reply, ())
    tags = [f.tag for f in found if f.tag != "unchecked"]
    if strictest is not None and strictest.action >= Action.DEFER:
        tags.append(WOULD_REFUSE)
    return Decision(None, tuple(dict.fromkeys(tags)))
