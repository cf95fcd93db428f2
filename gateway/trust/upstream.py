"""Authentication-Results (RFC 8601): reading an upstream's, and writing the gateway's own.

An upstream that already checked the mail (Postfix with milters, Exchange Online Protection, another MX)
says so in an ``Authentication-Results`` header. Anyone can write one, so it is believed only when the
client is one of the gateway's own (a relay network, or authenticated), only the topmost header (the one
the last hop added), and only when it names an authserv-id in ``trusted_authserv_ids``. Every other one is
ignored; the raw mail keeps them (it is never modified), but nothing downstream reads them: the contact
carries the gateway's own record.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gateway.trust.results import ArcResult, AuthResults, DkimResult, Result, SpfResult

__all__ = ["Claim", "Claims", "format_results", "parse_results", "topmost_trusted"]

_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
_ADDRESS = re.compile(r"(?:[!#$%&'*+\-/=?^_`{|}~0-9A-Za-z.]+@)?[0-9A-Za-z][0-9A-Za-z.\-]*")


@dataclass(frozen=True)
class Claim:
    """One ``method=result`` of a header, with its properties (``smtp.mailfrom``, ``header.d``...)."""

    method: str
    result: Result
    properties: tuple[tuple[str, str], ...] = ()

    def get(self, name: str) -> str:
        return next((v for k, v in self.properties if k == name), "")


@dataclass(frozen=True)
class Claims:
    authserv_id: str
    claims: tuple[Claim, ...]

    def of(self, method: str) -> list[Claim]:
        return [c for c in self.claims if c.method == method]


def _without_comments(value: str) -> str:
    """The header without its (nested) comments; quoted strings kept as they are."""
    out: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    for char in value:
        if escaped:
            escaped = False
            if depth == 0:
                out.append(char)
            continue
        if char == "\\":
            escaped = True
            if depth == 0:
                out.append(char)
            continue
        if quoted:
            quoted = char != '"'
            out.append(char)
        elif char == '"' and depth == 0:
            quoted = True
            out.append(char)
        elif char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif depth == 0:
            out.append(char)
    return "".join(out)


def _split(value: str, separator: str) -> list[str]:
    """Split outside quoted strings."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def parse_results(value: str) -> Claims | None:
    """A tolerant reading of one header's value; None when it has no authserv-id."""
    sections = _split(_without_comments(" ".join(value.split())), ";")
    head = sections[0].split()
    if not head:
        return None
    claims: list[Claim] = []
    for section in sections[1:]:
        # "a = b" is legal (CFWS around "="): close the gaps before splitting on white space
        words = _split(re.sub(r"\s*=\s*", "=", section.strip()), " ")
        if not words or "=" not in words[0]:
            continue  # "none", or nothing readable
        method, _, word = words[0].partition("=")
        properties = []
        for item in words[1:]:
            name, equals, prop = item.partition("=")
            if equals and "." in name:
                properties.append((name.lower(), _unquote(prop)))
        claims.append(Claim(method.split("/")[0].lower(), Result.read(word), tuple(properties)))
    return Claims(head[0].lower(), tuple(claims))


def topmost_trusted(values: Sequence[str], trusted: Iterable[str], own: str) -> Claims | None:
    """The first (topmost) header, when it names a trusted authserv-id that is not the gateway's own."""
    if not values:
        return None
    claims = parse_results(values[0])
    names = {t.lower() for t in trusted} - {own.lower()}
    if claims is None or claims.authserv_id not in names:
        return None
    return claims


def upstream_spf(claims: Claims) -> SpfResult:
    for claim in claims.of("spf"):
        mailfrom, helo = claim.get("smtp.mailfrom"), claim.get("smtp.helo")
        identity = "mailfrom" if mailfrom or not helo else "helo"
        domain = (mailfrom or helo).rpartition("@")[2].lower()
        return SpfResult(claim.result, identity, domain, f"from {claims.authserv_id}")
    return SpfResult(Result.NONE, comment=f"{claims.authserv_id} said nothing of SPF")


def upstream_dkim(claims: Claims) -> tuple[DkimResult, ...]:
    results = []
    for claim in claims.of("dkim"):
        domain = claim.get("header.d") or claim.get("header.i").rpartition("@")[2]
        results.append(
            DkimResult(
                claim.result,
                domain.lower(),
                claim.get("header.s"),
                claim.get("header.b"),
                f"from {claims.authserv_id}",
            )
        )
    return tuple(results)


def upstream_arc(claims: Claims) -> ArcResult:
    for claim in claims.of("arc"):
        return ArcResult(claim.result, f"from {claims.authserv_id}")
    return ArcResult(Result.NONE)


def upstream_says_dmarc_pass(claims: Claims) -> bool:
    return any(c.result is Result.PASS for c in claims.of("dmarc"))


def _value(text: str) -> str:
    """A property value as RFC 8601 writes it: a token or address as it is, anything else quoted."""
    text = re.sub(r"[\x00-\x1f\x7f]", "", text)
    if _TOKEN.fullmatch(text) or _ADDRESS.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _note(comment: str) -> str:
    comment = " ".join(re.sub(r"[()\\\x00-\x1f\x7f]", " ", comment).split())
    return f" ({comment})" if comment else ""


def format_results(authserv_id: str, auth: AuthResults) -> str:
    """The gateway's ``Authentication-Results`` value (without the field name)."""
    parts = [authserv_id]
    if auth.auth_user is not None:
        parts.append(f"auth=pass smtp.auth={_value(auth.auth_user)}")
    spf = auth.spf
    identity = f" smtp.{spf.identity}={_value(spf.domain)}" if spf.domain else ""
    parts.append(f"spf={spf.result}{_note(spf.comment)}{identity}")
    if not auth.dkim:
        parts.append("dkim=none")
    for signature in auth.dkim:
        text = f"dkim={signature.result}{_note(signature.comment)}"
        if signature.domain:
            text += f" header.d={_value(signature.domain)}"
        if signature.selector:
            text += f" header.s={_value(signature.selector)}"
        if signature.signature:
            text += f" header.b={_value(signature.signature)}"
        parts.append(text)
    dmarc = auth.dmarc
    notes = [dmarc.comment] if dmarc.comment else []
    if dmarc.policy is not None:
        notes.insert(0, f"p={dmarc.policy} dis={dmarc.disposition or 'none'}")
    text = f"dmarc={dmarc.result}{_note(' '.join(notes))}"
    if dmarc.from_domain:
        text += f" header.from={_value(dmarc.from_domain)}"
    parts.append(text)
    parts.append(f"arc={auth.arc.result}{_note(auth.arc.comment)}")
    return "; ".join(parts)
