"""Fuzzing the whole gateway over real sockets: Hypothesis builds SMTP sessions and MIME trees from hostile
pieces (bare CR and LF, NUL, 8-bit bytes, deep nesting, many parts, long lines, broken and reused
boundaries, writes split anywhere) and sends them to ``mail-gateway serve`` in spool mode, whose Connect is
``mail-gateway emulate``. It asserts what the hostile-mail issue promises:

- every reply is well formed (``NNN`` + space or hyphen, no NUL or bare CR, at most 512 octets, an
  enhanced status code on every refusal) and none is the "unexpected" ``451 4.3.0``;
- all the while, another session's ``NOOP`` is answered within a second (a watchdog measures every one);
- the gateway's memory (its process tree, readers included) grows within a bound;
- every mail answered ``250`` ends as a contact or a dead letter.

The number of examples is bounded by the Hypothesis profile (``HYPOTHESIS_PROFILE=thorough`` for more).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.delivery.spool import MailState, Spool, TargetState

from ..helpers import ROOT, free_port
from ..processes import tree_rss

MAX_MESSAGE_SIZE = 4 * 1024 * 1024
MEMORY_BOUND = 160 * 1024 * 1024  # growth of the process tree over its idle size, one session at a time
REPLY_LINE = re.compile(rb"[2-5][0-9]{2}([ -][^\r\n\x00]*)?")
ENHANCED = re.compile(rb"[245]\d{2}[ -][245]\.\d{1,3}\.\d{1,3}( |$)")
QUEUED = re.compile(rb"250 2\.0\.0 Queued as (\S+)")
EXAMPLES = max(10, settings().max_examples // 3)  # 50 in the default (bounded) profile


@dataclass
class Watchdog:
    """A well-behaved client beside the fuzzing: a NOOP every 100 ms (a new session every 50, below the
    junk-command limit), and the gateway's memory sampled at the same pace."""

    smtp_port: int
    pid: int
    worst_noop: float = 0.0
    peak_rss: int = 0
    idle_rss: int = 0
    stopped: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stopped.is_set():
            with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=30) as client:
                for _ in range(50):
                    started = time.monotonic()
                    code, _ = client.noop()
                    self.worst_noop = max(self.worst_noop, time.monotonic() - started)
                    assert code == 250
                    self.peak_rss = max(self.peak_rss, tree_rss(self.pid))
                    if self.stopped.wait(0.1):
                        return


@dataclass
class FuzzedGateway:
    smtp_port: int
    connect_url: str
    spool: Path
    watchdog: Watchdog
    accepted: list[str] = field(default_factory=list)
    codes: Counter[str] = field(default_factory=Counter)
    watchdog_errors: list[BaseException] = field(default_factory=list)


def _wait_ready(http_port: int, process: subprocess.Popen[bytes]) -> None:
    for _ in range(600):
        assert process.poll() is None, "the gateway ended at start"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz", timeout=5) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise AssertionError("the gateway did not become ready")


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzedGateway]:
    directory = tmp_path_factory.mktemp("fuzz")
    emulator = subprocess.Popen(
        [sys.executable, "-m", "gateway", "emulate", "--port", "0", "--s3-port", "0", "--bucket", "fuzz",
         "--instance", "fuzz-instance", "--address", "support@example.com", "--file-types", "*"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
    )  # fmt: skip
    assert emulator.stdout is not None
    s3_url, connect_url = (re.search(r"http://\S+", emulator.stdout.readline()) for _ in range(2))
    assert s3_url is not None and connect_url is not None
    smtp_port, http_port = free_port(), free_port()
    config = directory / "gateway.toml"
    config.write_text(
        f"""
[smtp]
listen = "127.0.0.1:{smtp_port}"
hostname = "mx.fuzz.test"
max_message_size = {MAX_MESSAGE_SIZE}
[aws]
connect_endpoint_url = "{connect_url.group(0)}"
s3_endpoint_url = "{s3_url.group(0)}"
[attachments]
bucket = "fuzz"
allowed_file_types = ["*"]
[queue]
path = "{directory / "spool"}"
rate_per_second = 200
burst = 50
retry_initial = "50ms"
retry_max = "500ms"
max_age = "2m"
read_budget = "20s"
min_free_disk = 0
[http]
listen = "127.0.0.1:{http_port}"
[[routes]]
match = "support@example.com"
instance_id = "fuzz-instance"
"""
    )
    environment = {**os.environ, "AWS_ACCESS_KEY_ID": "fuzz", "AWS_SECRET_ACCESS_KEY": "fuzz"}
    with (directory / "gateway.log").open("wb") as log:
        gateway = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL, stderr=log, env=environment, cwd=ROOT,
        )  # fmt: skip
    try:
        _wait_ready(http_port, gateway)
        watchdog = Watchdog(smtp_port, gateway.pid)
        state = FuzzedGateway(smtp_port, connect_url.group(0), directory / "spool", watchdog)
        _prime(state)
        watchdog.idle_rss = watchdog.peak_rss = tree_rss(gateway.pid)

        def guarded() -> None:
            try:
                watchdog.run()
            except BaseException as error:  # reported by the test that reads it
                state.watchdog_errors.append(error)

        thread = threading.Thread(target=guarded, name="watchdog", daemon=True)
        thread.start()
        yield state
        watchdog.stopped.set()
        thread.join(timeout=30)
    finally:
        for process in (gateway, emulator):
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        emulator.stdout.close()


def _prime(state: FuzzedGateway) -> None:
    """One ordinary mail through, so that the readers exist before the idle size is taken."""
    raw = b"From: a@client.test\r\nTo: support@example.com\r\nSubject: first\r\n\r\nhello\r\n"
    with smtplib.SMTP("127.0.0.1", state.smtp_port, timeout=30) as client:
        client.sendmail("a@client.test", ["support@example.com"], raw)
    spool = Spool(state.spool, create=False)
    for _ in range(600):
        if spool.counts()[MailState.DONE] == 1:
            return
        time.sleep(0.1)
    raise AssertionError("the first mail was not delivered")


# --- hostile pieces ---------------------------------------------------------------------------------------

NO_LF = st.binary(max_size=30).map(lambda piece: piece.replace(b"\n", b""))
WORDS = st.sampled_from([b"x", b"\r", b"\x00", b"\xff\xfe", b"caf\xc3\xa9", b"=?utf-8?b?w6k=?=", b"\t", b" "])
TEXT = st.lists(st.one_of(WORDS, NO_LF), max_size=12).map(b"".join)
LONG_LINE = st.integers(min_value=900, max_value=70_000).map(lambda n: b"Q" * n)
ADDRESS = st.one_of(
    st.just(b"<customer@client.test>"),
    st.just(b"<>"),
    st.just(b"<caf\xc3\xa9@client.test>"),
    st.just(b"<\xff@client.test>"),
    NO_LF.map(lambda junk: b"<" + junk + b">"),
)
RECIPIENT = st.one_of(
    st.just(b"<support@example.com>"),
    st.just(b"<postmaster>"),
    st.just(b"<someone@elsewhere.test>"),
    st.just(b"<support@example.com> SIZE=99999999999"),
    NO_LF.map(lambda junk: b"<" + junk + b"@example.com>"),
)
COMMAND = st.one_of(
    st.sampled_from(
        [
            b"NOOP",
            b"RSET",
            b"VRFY support",
            b"HELP",
            b"STARTTLS",
            b"AUTH LOGIN",
            b"*",
            b"BDAT 10",
            b"EXPN list",
            b"TURN",
            b"",
        ]
    ),
    NO_LF.map(lambda junk: b"EHLO " + junk),
    ADDRESS.map(lambda address: b"MAIL FROM:" + address),
    RECIPIENT.map(lambda address: b"RCPT TO:" + address),
    NO_LF,
    LONG_LINE,
)
LEAF_TYPES = st.sampled_from(
    [None, b"text/plain; charset=utf-8", b"text/plain; charset=x-unknown", b"text/html", b"application/pdf",
     b"application/octet-stream", b"message/rfc822", b"application/ms-tnef", b"text/plain; charset"]
)  # fmt: skip
ENCODINGS = st.sampled_from([None, b"base64", b"quoted-printable", b"8bit", b"x-junk"])
FILE_NAMES = st.one_of(
    st.none(), st.just(b"a.pdf"), st.just(b"\xff.exe"), TEXT, LONG_LINE.map(lambda q: q[:3000])
)


@st.composite
def leaf(draw: st.DrawFn) -> bytes:
    headers = []
    kind = draw(LEAF_TYPES)
    if kind is not None:
        headers.append(b"Content-Type: " + kind)
    encoding = draw(ENCODINGS)
    if encoding is not None:
        headers.append(b"Content-Transfer-Encoding: " + encoding)
    name = draw(FILE_NAMES)
    if name is not None:
        headers.append(b'Content-Disposition: attachment; filename="' + name + b'"')
    body = draw(st.one_of(TEXT, LONG_LINE, st.binary(max_size=2000), st.just(b"!!not base64!!")))
    return b"\r\n".join(headers) + b"\r\n\r\n" + body


def multipart(children: list[bytes], boundary: bytes, closed: bool, preamble: bytes) -> bytes:
    parts = [preamble] + [b"--" + boundary + b"\r\n" + child for child in children]
    end = [b"--" + boundary + b"--"] if closed else []
    head = b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\n'
    return head + b"\r\n".join(parts + end)


BOUNDARIES = st.sampled_from([b"B", b"BB", b"B-1", b"=_same", b" spaced", b"\xff"])
TREES = st.recursive(
    leaf(),
    lambda children: st.builds(multipart, st.lists(children, max_size=5), BOUNDARIES, st.booleans(), TEXT),
    max_leaves=12,
)
DEEP = st.builds(
    lambda depth, same, cr_only: _deep(depth, same, cr_only),
    st.integers(min_value=1, max_value=400),
    st.booleans(),
    st.booleans(),
)
MANY = st.integers(min_value=1, max_value=3000).map(
    lambda n: (
        b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n'
        + b"--B\r\nContent-Disposition: attachment\r\n\r\nx\r\n" * n
        + b"--B--"
    )
)


def _deep(depth: int, same: bool, cr_only: bool) -> bytes:
    body = b"Content-Type: text/plain\r\n\r\ninnermost"
    for level in range(depth):
        boundary = b"S" if same else b"L%d" % level
        body = multipart([body], boundary, True, b"")
    return body.replace(b"\r\n", b"\r") if cr_only else body


@st.composite
def mail_content(draw: st.DrawFn) -> bytes:
    """A mail's bytes as a hostile client sends them after DATA (before the terminating dot)."""
    headers = [b"From: " + draw(st.sampled_from([b"customer@client.test", b"CEO <ceo@bank.example>"]))]
    headers += draw(
        st.lists(
            st.one_of(
                st.just(b"X-Note: hi\rFrom: CEO <ceo@bank.example>"),
                st.just(b"Subject: " + b"=?utf-8?q?caf=C3=A9?= " * 3),
                TEXT.map(lambda text: b"Subject: " + text),
                TEXT.map(lambda text: b"Message-ID: <" + text + b">"),
                st.just(b"To: support@example.com"),
                st.just(b"MIME-Version: 1.0"),
                LONG_LINE.map(lambda q: b"X-Long: " + q),
                NO_LF,
            ),
            max_size=6,
        )
    )
    body = draw(st.one_of(TREES, DEEP, MANY, TEXT))
    content = b"\r\n".join(headers) + b"\r\n" + body
    ending = draw(st.sampled_from([b"\r\n", b"\n", b"\r", None]))
    if ending is not None:
        content = content.replace(b"\r\n", ending)
    while b"\r\n.\r\n" in content:  # the end of DATA comes where the session says, not inside the mail
        content = content.replace(b"\r\n.\r\n", b"\r\n..\r\n")
    return content


@dataclass(frozen=True)
class Session:
    before: list[bytes]
    sender: bytes
    recipients: list[bytes]
    content: bytes
    splits: list[int]


SESSIONS = st.builds(
    Session,
    st.lists(COMMAND, max_size=4),
    ADDRESS,
    st.lists(RECIPIENT, min_size=1, max_size=3),
    mail_content(),
    st.lists(st.integers(min_value=1, max_value=70_000), max_size=6),
)


# --- the client ---------------------------------------------------------------------------------------------


class Closed(Exception):
    """The gateway closed the session (after a 421, say)."""


class Conversation:
    def __init__(self, port: int) -> None:
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.replies: list[list[bytes]] = []

    def reply(self) -> list[bytes]:
        """One whole (perhaps multi-line) reply."""
        lines: list[bytes] = []
        while True:
            while b"\r\n" not in self.buffer:
                piece = self.socket.recv(65536)
                if not piece:
                    raise Closed()
                self.buffer += piece
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            lines.append(line)
            if len(line) < 4 or line[3:4] != b"-":
                self.replies.append(lines)
                return lines

    def command(self, line: bytes) -> bytes:
        self.send([line + b"\r\n"])
        return self.reply()[-1]

    def send(self, pieces: list[bytes]) -> None:
        try:
            for piece in pieces:
                self.socket.sendall(piece)
        except (BrokenPipeError, ConnectionResetError) as error:
            raise Closed() from error


def split(data: bytes, points: list[int]) -> list[bytes]:
    cuts = sorted({point % (len(data) + 1) for point in points} | {0, len(data)})
    return [data[start:end] for start, end in itertools.pairwise(cuts) if end > start]


SESSION_NUMBERS = itertools.count()


def play(port: int, session: Session) -> Conversation:
    """The session, its mail made unique by a first header (identical bytes are one mail to the gateway:
    a resend after a lost reply must not make a second contact)."""
    content = b"X-Fuzz-Session: %d\r\n" % next(SESSION_NUMBERS) + session.content
    conversation = Conversation(port)
    try:
        conversation.reply()  # the greeting
        conversation.command(b"EHLO fuzz.client.test")
        for line in session.before:
            conversation.command(line)
        conversation.command(b"MAIL FROM:" + session.sender)
        for recipient in session.recipients:
            conversation.command(b"RCPT TO:" + recipient)
        if conversation.command(b"DATA").startswith(b"354"):
            conversation.send(split(content + b"\r\n.\r\n", session.splits))
            conversation.reply()
        conversation.command(b"QUIT")
    except Closed:
        pass
    finally:
        conversation.socket.close()
    return conversation


def check_replies(conversation: Conversation) -> list[str]:
    """Each reply well formed; returns the queue ids of the mails it accepted."""
    accepted = []
    for reply in conversation.replies:
        for line in reply:
            assert len(line) + 2 <= 512, line[:80]
            assert REPLY_LINE.fullmatch(line), line[:200]
            assert b"4.3.0" not in line, line  # the reply for "anything unexpected"
        last = reply[-1]
        if last[:1] in (b"4", b"5"):
            assert ENHANCED.match(last), last
        queued = QUEUED.match(last)
        if queued:
            accepted.append(queued.group(1).decode())
    return accepted


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)
@given(session=SESSIONS)
def test_hostile_sessions_get_well_formed_replies(fuzzed: FuzzedGateway, session: Session) -> None:
    conversation = play(fuzzed.smtp_port, session)
    fuzzed.accepted.extend(check_replies(conversation))
    fuzzed.codes.update(reply[-1][:9].decode("ascii", "replace") for reply in conversation.replies[2:])


def test_the_loop_answered_memory_stayed_bounded_and_every_accepted_mail_ended(fuzzed: FuzzedGateway) -> None:
    """Runs after the fuzzing (file order): what the watchdog saw, then the end of every accepted mail."""
    assert not fuzzed.watchdog_errors, fuzzed.watchdog_errors
    spool = Spool(fuzzed.spool, create=False)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        counts = spool.counts()
        if counts[MailState.QUEUED] == counts[MailState.ACTIVE] == counts[MailState.DEFERRED] == 0:
            break
        time.sleep(0.2)
    fuzzed.watchdog.stopped.set()
    watchdog = fuzzed.watchdog
    assert watchdog.worst_noop < 1.0, f"a NOOP waited {watchdog.worst_noop:.2f} s"
    growth = watchdog.peak_rss - watchdog.idle_rss
    assert growth <= MEMORY_BOUND, f"the gateway grew by {growth / 2**20:.0f} MiB"
    with urllib.request.urlopen(fuzzed.connect_url + "/_emulator/contacts", timeout=30) as answer:
        contacts = {contact["ContactId"] for contact in json.load(answer)["contacts"]}
    dead = 0
    for queue_id in fuzzed.accepted:
        mail = spool.get(queue_id)
        assert mail is not None, queue_id
        if mail.state == MailState.DEAD:
            dead += 1
            continue
        assert mail.state == MailState.DONE, (queue_id, mail.state, mail.last_error)
        for target in mail.targets:
            assert target.state == TargetState.DELIVERED and target.contact_id in contacts, mail
    assert fuzzed.accepted, "no session got its mail accepted: the fuzzing tested nothing of delivery"
    print(
        f"\n{len(fuzzed.accepted)} mails accepted ({dead} dead letters), replies {dict(fuzzed.codes)}, "
        f"worst NOOP {watchdog.worst_noop * 1000:.0f} ms, growth {growth / 2**20:.1f} MiB"
    )
