"""A real Postfix in front: set up from ``deploy/postfix``, fed by ``sendmail``, relaying to the gateway.

Postfix comes from Debian's package (``.ci/run`` installs it). It runs from the default configuration
directory, because ``sendmail``'s set-group-id helper trusts no other; so the test writes
``/etc/postfix/main.cf`` only when there is none (or when it wrote it), and removes it afterwards. Its own
queue keeps and retries the mail while the gateway answers 4xx, as in production; the timers are made
test-sized (a second or two instead of minutes).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from gateway.replies import EARLIER_CONTACT
from gateway.sandbox.emulator import EmulatorServer
from gateway.sandbox.s3server import EmbeddedS3
from gateway.service.gateway import Gateway
from gateway.settings import RouteSettings, Settings

from ..helpers import (
    CREDENTIALS,
    ROOT,
    contacts,
    make_settings,
    put_faults,
    spool_settings,
    unavailable,
    wait_until,
)

EXAMPLE = ROOT / "deploy" / "postfix"
MAIN_CF = Path("/etc/postfix/main.cf")
MARKER = "# written by the mail gateway's tests: removed when they end"
GATEWAY_IN_EXAMPLE = "[mail-gateway.example.internal]:25"
TEST_SETTINGS = {
    "compatibility_level": "3.6",
    "myhostname": "postfix.test",
    "mydestination": "",
    "alias_maps": "",
    "inet_protocols": "ipv4",
    "inet_interfaces": "loopback-only",
    "master_service_disable": "inet",  # no smtpd on port 25: mail comes in through sendmail only
    "smtp_tls_security_level": "none",  # this test's gateway has no certificate
    # Two seconds, not one: at one, the deferred-queue scan can find the mail while the smtp client still
    # holds its lock, and qmgr then sets it aside for a fixed 60 s ("skipped, still being delivered").
    "minimal_backoff_time": "2s",
    "maximal_backoff_time": "4s",
    "queue_run_delay": "1s",
}


def _unavailable() -> str | None:
    if shutil.which("postfix") is None or shutil.which("sendmail") is None:
        return "Postfix is not installed (apt-get install postfix; .ci/run does it)"
    if os.geteuid() != 0:
        return "starting Postfix needs root"
    if MAIN_CF.exists() and MARKER not in MAIN_CF.read_text():
        return f"{MAIN_CF} belongs to a Postfix configured on this machine; not touching it"
    if subprocess.run(["postfix", "status"], capture_output=True).returncode == 0:
        return "a Postfix is already running on this machine"
    return None


class Postfix:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.log = directory / "maillog"

    def start(self, gateway_port: int) -> None:
        transport = (EXAMPLE / "transport").read_text()
        assert GATEWAY_IN_EXAMPLE in transport
        (self.directory / "transport").write_text(
            transport.replace(GATEWAY_IN_EXAMPLE, f"[127.0.0.1]:{gateway_port}")
        )
        example = (EXAMPLE / "main.cf").read_text().replace("/etc/postfix/", f"{self.directory}/")
        MAIN_CF.write_text(f"{MARKER}\n{example}")
        settings = {
            **TEST_SETTINGS,
            "maillog_file_prefixes": str(self.directory),
            "maillog_file": str(self.log),
        }
        run("postconf", "-e", *(f"{key}={value}" for key, value in settings.items()))
        run("postmap", str(self.directory / "transport"))
        run("postfix", "start")

    def stop(self) -> None:
        subprocess.run(["postfix", "stop"], capture_output=True)
        subprocess.run(["postsuper", "-d", "ALL"], capture_output=True)  # nothing of ours stays queued

    def sendmail(self, message: EmailMessage) -> None:
        """Submit as an application does: ``sendmail -t`` takes the recipients from the header."""
        result = subprocess.run(["sendmail", "-t"], input=message.as_bytes(), capture_output=True, timeout=30)
        assert result.returncode == 0, result.stderr

    def entries(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


def run(*command: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{' '.join(command)}: {result.stderr}"


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
        MAIN_CF.unlink(missing_ok=True)
        shutil.rmtree(directory, ignore_errors=True)


ROUTES = (RouteSettings(match="*@support.example.com", instance_id="postfix-instance"),)


def message(message_id: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = "Kundin <kundin@client.test>"
    mail["To"] = "help@support.example.com"
    mail["Subject"] = "Rückfrage zur Rechnung"
    mail["Message-ID"] = message_id
    mail.set_content("Guten Tag,\nbitte um Rückruf.\n")
    mail.add_attachment(b"%PDF-1.4 invoice", maintype="application", subtype="pdf", filename="rechnung.pdf")
    return mail


async def test_postfix_relays_a_sendmail_mail_to_the_gateway(
    postfix: Postfix, emulator: EmulatorServer, s3_server: EmbeddedS3, bucket: str, tmp_path: Path
) -> None:
    settings = make_settings(emulator, s3_server, bucket, ROUTES, queue=spool_settings(tmp_path / "spool"))
    async with Gateway(settings, CREDENTIALS) as gateway:
        port = gateway.smtp_port
        postfix.start(port)
        await asyncio.to_thread(postfix.sendmail, message("<postfix-1@client.test>"))
        await wait_until(lambda: len(contacts(emulator)) == 1, seconds=30)
        await wait_until(lambda: any("status=sent" in line for line in postfix.entries()), seconds=30)
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
        await asyncio.to_thread(postfix.sendmail, message("<postfix-2@client.test>"))
        await wait_until(lambda: any("status=deferred" in line for line in postfix.entries()), seconds=30)
        await put_faults(emulator, error_rate=0.0)
        # Beyond qmgr's 60 s set-aside, in case the race above still happens on a loaded machine.
        await wait_until(lambda: any("status=sent" in line for line in postfix.entries()), seconds=90)
    deferred = [line for line in postfix.entries() if "status=deferred" in line]
    assert "451 4.3.0 Amazon Connect answered with an error" in deferred[0]
    [contact] = contacts(emulator)  # one contact, however many attempts it took
    assert contact.request["EmailMessage"]["RawMessage"]["Headers"]["MESSAGE_ID"] == "<postfix-2@client.test>"
    [sent] = [line for line in postfix.entries() if "status=sent" in line]
    # A 500 injected after the contact was made leaves the ContactId unseen; the retry's 409 names it so.
    assert contact.contact_id in sent or EARLIER_CONTACT in sent
    failed = [c for c in emulator.connect.calls if c["Status"] >= 500]
    assert failed, "the gateway never saw Connect fail"
