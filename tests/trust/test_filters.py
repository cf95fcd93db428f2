"""Spam and virus verdicts from the real engines: Debian's rspamd over HTTP and clamd over its Unix and TCP
sockets, each started once for the session with a configuration the tests write.

rspamd's action is forced per mail with the test prefilter's ``X-Test-Action`` header, or reached through
its real thresholds with ``X-Test-Score``. clamd knows one signature: the EICAR test file's.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.contact import contract
from gateway.contact.fitting import fit_mail
from gateway.contact.request import build_request
from gateway.mail import InMemoryContent, Target
from gateway.message.mime import parse_mail
from gateway.replies import Replies
from gateway.settings import (
    AuthenticationSettings,
    ContentPolicy,
    EngineFailure,
    FailAction,
    FilterSettings,
    RouteSettings,
    TrustMode,
    VirusAction,
)
from gateway.trust.infected import without_infected
from gateway.trust.judge import SessionFacts
from gateway.trust.results import TrustResult, Verdict

from ..helpers import Clock, free_port, make_mail
from .conftest import MakeTrust
from .servers import EICAR, EICAR_SIGNATURE, MARKER, Clamd, Rspamd

ROUTE = RouteSettings(match="support@example.com", instance_id="i-1")
SESSION = SessionFacts(
    client="192.0.2.5",
    helo="mail.client.test",
    sender="customer@client.test",
    recipients=("support@example.com", "sales@example.com"),
    queue_id="q1",
)
OFF = AuthenticationSettings()  # these tests are about the engines alone
VIRUS = f"{EICAR_SIGNATURE}.UNOFFICIAL"  # clamd's name for a signature of an unofficial database


def mail(
    action: str | None = None, score: float | None = None, files: list[tuple[str, bytes]] | None = None
) -> bytes:
    headers = {}
    if action is not None:
        headers["X-Test-Action"] = action
    if score is not None:
        headers["X-Test-Score"] = str(score)
    attachments = [(name, "application/octet-stream", data) for name, data in files or []]
    message = make_mail(
        subject="Hello", message_id="<f1@client.test>", headers=headers, attachments=attachments
    )
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


async def judge(make_trust: MakeTrust, raw: bytes, filters: FilterSettings, **options: object) -> TrustResult:
    session = options.pop("session", SESSION)
    assert isinstance(session, SessionFacts)
    trust = make_trust(OFF, filters, **options)
    return await trust.judge(InMemoryContent(raw), session, [ROUTE])


def spam(server: Rspamd, **changes: object) -> FilterSettings:
    return FilterSettings(rspamd_url=server.url, rspamd_timeout=10.0, **changes)  # type: ignore[arg-type]


# --- rspamd -------------------------------------------------------------------------------------------


async def test_no_action_is_a_pass(make_trust: MakeTrust, rspamd_server: Rspamd) -> None:
    result = await judge(make_trust, mail(), spam(rspamd_server))
    assert result.refusal is None
    assert result.headers == {"X_SES_SPAM_VERDICT": "PASS"}
    assert result.attributes["gateway_spam_action"] == "no action"
    assert result.quarantine == ()


async def test_reject_is_refused(make_trust: MakeTrust, rspamd_server: Rspamd) -> None:
    result = await judge(make_trust, mail("reject"), spam(rspamd_server))
    assert result.refusal == Replies.SPAM_REFUSED
    assert (result.refusal.code, result.refusal.status) == (550, "5.7.1")


async def test_soft_reject_is_deferred(make_trust: MakeTrust, rspamd_server: Rspamd) -> None:
    result = await judge(make_trust, mail("soft reject"), spam(rspamd_server))
    assert result.refusal == Replies.SPAM_DEFERRED
    assert (result.refusal.code, result.refusal.status) == (451, "4.7.1")


async def test_add_header_is_delivered_as_spam(make_trust: MakeTrust, rspamd_server: Rspamd) -> None:
    result = await judge(make_trust, mail("add header"), spam(rspamd_server))
    assert result.refusal is None
    assert result.headers["X_SES_SPAM_VERDICT"] == "FAIL"
    assert result.quarantine == ("spam",)


async def test_the_thresholds_decide_from_the_score(make_trust: MakeTrust, rspamd_server: Rspamd) -> None:
    result = await judge(make_trust, mail(score=8.5), spam(rspamd_server))
    assert result.spam is not None
    assert (result.spam.action, result.spam.score) == ("rewrite subject", 8.5)
    assert result.attributes["gateway_spam_score"] == "8.50"
    assert result.headers["X_SES_SPAM_VERDICT"] == "FAIL"


async def test_reject_can_be_only_tagged(make_trust: MakeTrust, rspamd_server: Rspamd) -> None:
    result = await judge(make_trust, mail("reject"), spam(rspamd_server, spam_reject=FailAction.TAG))
    assert result.refusal is None
    assert result.headers["X_SES_SPAM_VERDICT"] == "FAIL"


async def test_an_authenticated_sender_is_tagged_not_refused(
    make_trust: MakeTrust, rspamd_server: Rspamd
) -> None:
    session = SessionFacts("192.0.2.5", "h.test", "me@example.com", ("support@example.com",), "me")
    result = await judge(make_trust, mail("reject"), spam(rspamd_server), session=session)
    assert result.refusal is None
    assert result.quarantine == ("spam",)


async def test_greylist_defers_then_lets_a_later_retry_pass(
    make_trust: MakeTrust, rspamd_server: Rspamd
) -> None:
    clock = Clock()
    trust = make_trust(OFF, spam(rspamd_server, greylist_delay=300.0), clock=clock)
    first = await trust.judge(InMemoryContent(mail("greylist")), SESSION, [ROUTE])
    assert first.refusal == Replies.GREYLISTED
    clock.now += 60
    early = await trust.judge(InMemoryContent(mail("greylist")), SESSION, [ROUTE])
    assert early.refusal == Replies.GREYLISTED
    clock.now += 300
    later = await trust.judge(InMemoryContent(mail("greylist")), SESSION, [ROUTE])
    assert later.refusal is None
    assert later.headers["X_SES_SPAM_VERDICT"] == "GRAY"


# --- clamd --------------------------------------------------------------------------------------------


@pytest.fixture(params=["unix", "tcp"])
def clamd_address(request: pytest.FixtureRequest, clamd_server: Clamd) -> Path | tuple[str, int]:
    return clamd_server.socket if request.param == "unix" else ("127.0.0.1", clamd_server.port)


def scanner(address: Path | tuple[str, int], **changes: object) -> FilterSettings:
    return FilterSettings(clamd_address=address, clamd_timeout=10.0, **changes)  # type: ignore[arg-type]


async def test_a_clean_mail_passes(make_trust: MakeTrust, clamd_address: Path | tuple[str, int]) -> None:
    result = await judge(make_trust, mail(files=[("report.pdf", b"%PDF-1.4 clean")]), scanner(clamd_address))
    assert result.headers == {"X_SES_VIRUS_VERDICT": "PASS"}
    assert result.refusal is None


async def test_eicar_is_refused(make_trust: MakeTrust, clamd_address: Path | tuple[str, int]) -> None:
    result = await judge(make_trust, mail(files=[("invoice.com", EICAR)]), scanner(clamd_address))
    assert result.refusal == Replies.VIRUS_REFUSED.format(signature=VIRUS)
    assert (result.refusal.code, result.refusal.status) == (554, "5.7.1")
    assert result.strip == ()


async def test_eicar_is_stripped_and_never_reaches_the_request(
    make_trust: MakeTrust, clamd_server: Clamd
) -> None:
    raw = mail(files=[("report.pdf", b"%PDF-1.4 clean"), ("invoice.com", EICAR)])
    result = await judge(make_trust, raw, scanner(clamd_server.socket, virus=VirusAction.STRIP))
    assert result.refusal is None
    assert result.headers["X_SES_VIRUS_VERDICT"] == "FAIL"
    assert result.attributes["gateway_virus_found"] == VIRUS
    assert [(f.index, f.filename) for f in result.strip] == [(1, "invoice.com")]
    # what the delivery does with it (stored as JSON and read back first)
    stored = TrustResult.from_json(json.loads(json.dumps(result.to_json())))
    parsed, left_out = without_infected(parse_mail(raw), stored.strip)
    assert [a.filename for a in parsed.attachments] == ["report.pdf"]
    assert left_out == (f"invoice.com (a virus was found: {VIRUS})",)
    fitted = fit_mail(parsed, ContentPolicy(allowed_file_types=None))
    target = Target(ROUTE, "support@example.com")
    request = build_request(fitted, target, raw, verdicts=stored.verdicts)
    assert contract.violations(request) == []
    assert EICAR not in json.dumps(request).encode()


async def test_a_virus_in_no_file_cannot_be_stripped(make_trust: MakeTrust, clamd_server: Clamd) -> None:
    raw = b"From: a@client.test\r\nTo: support@example.com\r\nSubject: x\r\n\r\n" + MARKER + b"\r\n"
    result = await judge(make_trust, raw, scanner(clamd_server.socket, virus=VirusAction.STRIP))
    assert result.virus is not None
    assert result.virus.signatures == ("Test.Gateway.Marker.UNOFFICIAL",)
    assert result.virus.unattributed
    assert result.refusal is not None
    assert result.refusal.code == 554


async def test_monitor_mode_still_strips_infected_files(make_trust: MakeTrust, clamd_server: Clamd) -> None:
    trust = make_trust(AuthenticationSettings(mode=TrustMode.MONITOR), scanner(clamd_server.socket))
    result = await trust.judge(InMemoryContent(mail(files=[("x.com", EICAR)])), SESSION, [ROUTE])
    assert result.refusal is None
    assert result.quarantine == ("virus", "would-refuse")
    assert [f.filename for f in result.strip] == ["x.com"]


# --- engines that fail --------------------------------------------------------------------------------


@pytest.fixture
def silent_tcp() -> Iterator[tuple[str, int]]:
    """A port that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield "127.0.0.1", int(listener.getsockname()[1])


@pytest.fixture
async def silent_unix(tmp_path: Path) -> AsyncIterator[Path]:
    """A Unix socket whose server reads everything and never answers."""

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            pass
        writer.close()

    path = tmp_path / "silent.sock"
    server = await asyncio.start_unix_server(swallow, path)
    yield path
    server.close()


@pytest.mark.parametrize("failure", list(EngineFailure))
async def test_rspamd_down(make_trust: MakeTrust, failure: EngineFailure) -> None:
    filters = FilterSettings(rspamd_url=f"http://127.0.0.1:{free_port()}", on_failure=failure)
    result = await judge(make_trust, mail(), filters)
    assert result.headers == {"X_SES_SPAM_VERDICT": "PROCESSING_FAILED"}
    expected = Replies.CHECKS_UNAVAILABLE if failure is EngineFailure.CLOSED else None
    assert result.refusal == expected


async def test_rspamd_that_never_answers_is_a_failure(
    make_trust: MakeTrust, silent_tcp: tuple[str, int]
) -> None:
    host, port = silent_tcp
    result = await judge(
        make_trust, mail(), FilterSettings(rspamd_url=f"http://{host}:{port}", rspamd_timeout=0.3)
    )
    assert result.headers == {"X_SES_SPAM_VERDICT": "PROCESSING_FAILED"}
    assert result.refusal is None


@pytest.mark.parametrize("failure", list(EngineFailure))
async def test_clamd_down(make_trust: MakeTrust, tmp_path: Path, failure: EngineFailure) -> None:
    filters = FilterSettings(clamd_address=tmp_path / "no.sock", on_failure=failure)
    result = await judge(make_trust, mail(files=[("a.pdf", b"%PDF")]), filters)
    assert result.headers == {"X_SES_VIRUS_VERDICT": "PROCESSING_FAILED"}
    expected = Replies.CHECKS_UNAVAILABLE if failure is EngineFailure.CLOSED else None
    assert result.refusal == expected


async def test_clamd_that_never_answers_is_a_failure(make_trust: MakeTrust, silent_unix: Path) -> None:
    filters = FilterSettings(clamd_address=silent_unix, clamd_timeout=0.3, on_failure=EngineFailure.CLOSED)
    result = await judge(make_trust, mail(), filters)
    assert result.headers == {"X_SES_VIRUS_VERDICT": "PROCESSING_FAILED"}
    assert result.refusal == Replies.CHECKS_UNAVAILABLE


async def test_a_file_larger_than_clamd_takes_is_unscanned(
    make_trust: MakeTrust, clamd_server: Clamd
) -> None:
    filters = FilterSettings(clamd_address=clamd_server.socket, clamd_max_size=1000)
    result = await judge(make_trust, mail(files=[("big.pdf", b"x" * 5000)]), filters)
    assert result.headers == {"X_SES_VIRUS_VERDICT": "PROCESSING_FAILED"}


async def test_both_engines_and_the_contact(
    make_trust: MakeTrust, rspamd_server: Rspamd, clamd_server: Clamd
) -> None:
    filters = FilterSettings(rspamd_url=rspamd_server.url, clamd_address=("127.0.0.1", clamd_server.port))
    raw = mail("add header", files=[("a.pdf", b"%PDF")])
    result = await judge(make_trust, raw, filters)
    assert result.headers == {"X_SES_SPAM_VERDICT": "FAIL", "X_SES_VIRUS_VERDICT": "PASS"}
    target = Target(ROUTE, "support@example.com")
    request = build_request(fit_mail(parse_mail(raw), ContentPolicy()), target, raw, verdicts=result.verdicts)
    assert contract.violations(request) == []
    assert request["EmailMessage"]["RawMessage"]["Headers"]["X_SES_SPAM_VERDICT"] == "FAIL"
    assert request["Attributes"]["gateway_spam"] == "FAIL"
    assert Verdict(request["Attributes"]["gateway_virus"]) is Verdict.PASS
