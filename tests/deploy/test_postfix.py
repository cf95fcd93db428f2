"""A real Postfix in front: set up from ``deploy/postfix``, fed over SMTP, relaying to the gateway.

Postfix comes from Debian's package (``.ci/run`` installs it). Each test runs its own Postfix instance:
its own configuration and queue directories in a temporary directory (``postfix -c DIR``), listening on a
free loopback port, never port 25, so that a Postfix configured on the machine (``/etc/postfix``) is
neither touched nor in the way. Its own queue keeps and retries the mail while the gateway answers 4xx,
as in production; the timers are made test-sized (a second or two instead of minutes).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import smtplib
import subprocess
import tempfile
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from gateway.config import read_memory_limit
from gateway.config.frontdoor import parse_limits
from gateway.config.table import Table
from gateway.replies import EARLIER_CONTACT
from gateway.sandbox.emulator import EmulatorServer
from gateway.sandbox.s3server import EmbeddedS3
from gateway.service.gateway import Gateway
from gateway.settings import AccessSettings, RouteSettings, Settings

from ..helpers import (
    CREDENTIALS,
    ROOT,
    contacts,
    free_port,
    make_settings,
    put_faults,
    spool_settings,
    unavailable,
    wait_until,
)

EXAMPLE = ROOT / "deploy" / "postfix"
GATEWAY_IN_EXAMPLE = "[mail-gateway.example.internal]:25"
# Postfix's own master.cf as shipped (Debian keeps a pristine copy; the configured one may be customised).
MASTER_CF = (Path("/usr/share/postfix/master.cf.dist"), Path("/etc/postfix/master.cf.proto"))
TEST_SETTINGS = {
    "compatibility_level": "3.6",
    "myhostname": "postfix.test",
    "mydestination": "",
    "mynetworks": "127.0.0.0/8",
    "alias_maps": "",
    "alias_database": "",
    "inet_protocols": "ipv4",
    "inet_interfaces": "127.0.0.1",
    "smtp_tls_security_level": "none",  # this test's gateway has no certificate
    # Two seconds, not one: at one, the deferred-queue scan can find the mail while the smtp client still
    # holds its lock, and qmgr then sets it aside for a fixed 60 s ("skipped, still being delivered").
    "minimal_backoff_time": "2s",
    "maximal_backoff_time": "4s",
    "queue_run_delay": "1s",
}


def _unavailable() -> str | None:
    if shutil.which("postfix") is None or shutil.which("postconf") is None:
        return "Postfix is not installed (apt-get install postfix; .ci/run does it)"
    if os.geteuid() != 0:
        return "starting Postfix needs root"
    if not any(path.exists() for path in MASTER_CF):
        return f"none of {', '.join(map(str, MASTER_CF))} is there to start a master.cf from"
    return None


def _master_cf(port: int) -> str:
    """Postfix's shipped services, unchrooted (the queue is a temporary directory), and smtpd on ``port``
    of the loopback address instead of port 25."""
    shipped = next(path for path in MASTER_CF if path.exists()).read_text()
    lines = []
    for line in shipped.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line[0].isspace():  # an option of the service above
            lines.append(line)
            continue
        fields = line.split()
        if fields[:2] == ["smtp", "inet"]:
            fields[0] = f"127.0.0.1:{port}"
        fields[4] = "n"  # no chroot
        lines.append(" ".join(fields))
    return "\n".join(lines) + "\n"


class Postfix:
    """One Postfix instance of its own in ``directory``: configuration, queue, data and log."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.log = directory / "maillog"
        self.port = 0

    def start(self, gateway_port: int, **settings: str) -> None:
        directory = self.directory
        transport = (EXAMPLE / "transport").read_text()
        assert GATEWAY_IN_EXAMPLE in transport
        (directory / "transport").write_text(
            transport.replace(GATEWAY_IN_EXAMPLE, f"[127.0.0.1]:{gateway_port}")
        )
        (directory / "main.cf").write_text(
            (EXAMPLE / "main.cf").read_text().replace("/etc/postfix/", f"{directory}/")
        )
        self.port = free_port()
        (directory / "master.cf").write_text(_master_cf(self.port))
        (directory / "queue").mkdir()  # postfix start makes its subdirectories
        (directory / "data").mkdir()
        shutil.chown(directory / "data", "postfix")
        values = {
            **TEST_SETTINGS,
            "queue_directory": str(directory / "queue"),
            "data_directory": str(directory / "data"),
            "maillog_file_prefixes": str(directory),
            "maillog_file": str(self.log),
            **settings,
        }
        self.run("postconf", "-e", *(f"{key}={value}" for key, value in values.items()))
        self.run("postmap", str(directory / "transport"))
        self.run("postfix", "start")

    def run(self, command: str, *arguments: str) -> str:
        """A Postfix command against this instance's configuration directory."""
        result = subprocess.run(
            [command, "-c", str(self.directory), *arguments], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, (
            f"{command} {' '.join(arguments)}: {result.stderr}{self.entries()[-5:]}"
        )
        return result.stdout

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", str(self.directory), "stop"], capture_output=True, timeout=60)

    def submit(self, *messages: EmailMessage) -> None:
        """Hand mail to Postfix over SMTP, as an application or another MTA does."""
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as client:
            for message in messages:
                assert client.send_message(message) == {}

    def entries(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def count(self, text: str) -> int:
        return sum(text in line for line in self.entries())


@pytest.fixture
def postfix() -> Iterator[Postfix]:
    reason = _unavailable()
    if reason is not None:
        unavailable(reason)
    directory = Path(tempfile.mkdtemp(prefix="postfix-test-"))
    directory.chmod(0o755)  # Postfix's daemons run as the postfix user
    server = Postfix(directory)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


ROUTES = (RouteSettings(match="*@support.example.com", instance_id="postfix-instance"),)


def message(message_id: str, attachment: bool = True) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = "Kundin <kundin@client.test>"
    mail["To"] = "help@support.example.com"
    mail["Subject"] = "Rückfrage zur Rechnung"
    mail["Message-ID"] = message_id
    mail.set_content("Guten Tag,\nbitte um Rückruf.\n")
    if attachment:
        mail.add_attachment(
            b"%PDF-1.4 invoice", maintype="application", subtype="pdf", filename="rechnung.pdf"
        )
    return mail


async def test_postfix_relays_a_mail_to_the_gateway(
    postfix: Postfix, emulator: EmulatorServer, s3_server: EmbeddedS3, bucket: str, tmp_path: Path
) -> None:
    settings = make_settings(emulator, s3_server, bucket, ROUTES, queue=spool_settings(tmp_path / "spool"))
    async with Gateway(settings, CREDENTIALS) as gateway:
        port = gateway.smtp_port
        postfix.start(port)
        await asyncio.to_thread(postfix.submit, message("<postfix-1@client.test>"))
        await wait_until(lambda: len(contacts(emulator)) == 1, seconds=30)
        await wait_until(lambda: postfix.count("status=sent") == 1, seconds=30)
    [contact] = contacts(emulator)
    request = contact.request
    assert request["InstanceId"] == "postfix-instance"
    assert request["DestinationEmailAddress"] == "help@support.example.com"
    assert request["FromEmailAddress"] == {"EmailAddress": "kundin@client.test", "DisplayName": "Kundin"}
    raw = request["EmailMessage"]["RawMessage"]
    assert raw["Subject"] == "Rückfrage zur Rechnung"
    assert raw["Body"] == "Guten Tag,\nbitte um Rückruf.\n"
    assert raw["Headers"]["MESSAGE_ID"] == "<postfix-1@client.test>"
    assert [a["FileName"] for a in request["Attachments"]] == ["rechnung.pdf"]
    [sent] = [line for line in postfix.entries() if "status=sent" in line]
    assert f"relay=127.0.0.1[127.0.0.1]:{port}" in sent and "250 2.0.0 Queued as" in sent


async def test_postfix_retries_while_the_gateway_answers_4xx(
    postfix: Postfix, emulator: EmulatorServer, s3_server: EmbeddedS3, bucket: str
) -> None:
    """Sync mode passes Connect's outage on as 451; Postfix keeps the mail and tries again."""
    settings: Settings = make_settings(emulator, s3_server, bucket, ROUTES)
    await put_faults(emulator, error_rate=1.0)
    async with Gateway(settings, CREDENTIALS) as gateway:
        postfix.start(gateway.smtp_port)
        await asyncio.to_thread(postfix.submit, message("<postfix-2@client.test>"))
        await wait_until(lambda: postfix.count("status=deferred") > 0, seconds=30)
        await put_faults(emulator, error_rate=0.0)
        # Beyond qmgr's 60 s set-aside, in case the race above still happens on a loaded machine.
        await wait_until(lambda: postfix.count("status=sent") == 1, seconds=90)
    deferred = [line for line in postfix.entries() if "status=deferred" in line]
    assert "451 4.3.0 Amazon Connect answered with an error" in deferred[0]
    [contact] = contacts(emulator)  # one contact, however many attempts it took
    assert contact.request["EmailMessage"]["RawMessage"]["Headers"]["MESSAGE_ID"] == "<postfix-2@client.test>"
    [sent] = [line for line in postfix.entries() if "status=sent" in line]
    # A 500 injected after the contact was made leaves the ContactId unseen; the retry's 409 names it so.
    assert contact.contact_id in sent or EARLIER_CONTACT in sent
    failed = [c for c in emulator.connect.calls if c["Status"] >= 500]
    assert failed, "the gateway never saw Connect fail"


@pytest.mark.parametrize(
    ("relay_networks", "mails"),
    [
        # The default: this machine is a relay, free of the per-client limits: far more than 60 mails.
        pytest.param(AccessSettings().relay_networks, 300, id="relay_networks-default"),
        # Nobody is a relay: the per-client default of 50 connections alone must take Postfix's 20 (and
        # fewer mails than the per-client rate of 60 a minute, which then applies).
        pytest.param((), 50, id="relay_networks-empty"),
    ],
)
async def test_a_postfix_relay_at_its_default_20_connections_is_never_refused(
    postfix: Postfix,
    emulator: EmulatorServer,
    s3_server: EmbeddedS3,
    bucket: str,
    relay_networks: tuple[()],
    mails: int,
) -> None:
    """Postfix delivers to one destination over up to default_destination_concurrency_limit (20)
    connections at once. It starts at 20 here (initial_destination_concurrency; it would climb there as
    deliveries succeed), and each delivery takes a while (sync mode, Connect answering in 300 ms), so that
    the 20 are open together. The gateway runs with the configuration file's default limits."""
    limits = parse_limits(Table({}, "limits"), read_memory_limit())
    settings = make_settings(emulator, s3_server, bucket, ROUTES)
    settings = Settings(
        **{**vars(settings), "limits": limits, "access": AccessSettings(relay_networks=relay_networks)}
    )
    await put_faults(emulator, latency_ms=300)
    async with Gateway(settings, CREDENTIALS) as gateway:
        postfix.start(gateway.smtp_port, initial_destination_concurrency="20")
        assert postfix.run("postconf", "-h", "default_destination_concurrency_limit").strip() == "20"
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, gateway.admission.connections)
                await asyncio.sleep(0.005)

        watcher = asyncio.create_task(watch())
        batch = [message(f"<relay-{n}@client.test>", attachment=False) for n in range(mails)]
        await asyncio.to_thread(postfix.submit, *batch)
        await wait_until(lambda: postfix.count("status=sent") == mails, seconds=120)
        watcher.cancel()
        refused = [
            line for line in gateway.metrics.exposition().decode().splitlines() if "refused_total{" in line
        ]
    assert postfix.count("status=deferred") == 0 and postfix.count("refused to talk") == 0
    assert refused == []
    assert len(contacts(emulator)) == mails
    assert peak > 10, f"Postfix held only {peak} connections at once: the test did not reach its point"
