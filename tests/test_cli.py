"""The command line, run as a user runs it: in a child process."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from gateway.contact import contract

from .helpers import ROOT, Sandbox, make_mail, unavailable


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


@pytest.fixture
def eml(tmp_path: Path) -> Path:
    message = make_mail(
        sender="Kunde <kunde@client.test>",
        to="support@example.com, other@example.org",
        subject="Parse me",
        message_id="<p1@client.test>",
        attachments=[("a.pdf", "application/pdf", b"data")],
    )
    path = tmp_path / "mail.eml"
    path.write_bytes(message.as_bytes())
    return path


def test_parse_prints_valid_requests_for_each_recipient(eml: Path) -> None:
    result = run("parse", str(eml))
    assert result.returncode == 0, result.stderr
    requests = json.loads(result.stdout)
    assert [r["DestinationEmailAddress"] for r in requests] == ["support@example.com", "other@example.org"]
    assert all(contract.violations(r) == [] for r in requests)
    assert requests[0]["Attachments"][0]["FileName"] == "a.pdf"
    assert requests[0]["EmailMessage"]["RawMessage"]["Subject"] == "Parse me"


def test_parse_with_a_config_and_rcpt(eml: Path, tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        (ROOT / "config.example.toml")
        .read_text()
        .replace('contact_flow_id = ""', 'contact_flow_id = "flow-9"')
    )
    result = run("parse", str(eml), "--config", str(config), "--rcpt", "support+vip@example.com")
    assert result.returncode == 0, result.stderr
    [request] = json.loads(result.stdout)
    assert request["ContactFlowId"] == "flow-9"
    assert request["Attributes"] == {"gateway_address_tag": "vip"}
    assert request["Attachments"][0]["S3Url"].startswith("https://example-connect-attachments.s3.")
    refused = run("parse", str(eml), "--config", str(config), "--rcpt", "nobody@elsewhere.example")
    assert refused.returncode == 1
    assert "550 5.7.1" in refused.stderr


def test_parse_places_each_routes_attachments_where_its_contacts_would(eml: Path, tmp_path: Path) -> None:
    """A route with its own region, bucket and prefix prints its own S3 URLs and original's locator."""
    config = tmp_path / "gateway.toml"
    config.write_text(
        '[aws]\nregion = "eu-west-1"\n'
        '[attachments]\nbucket = "dublin-attachments"\nprefix = "in/"\nstore_original = "always"\n'
        '[[routes]]\nmatch = "support@example.com"\ninstance_id = "instance-dublin"\n'
        '[[routes]]\nmatch = "*@example.org"\ninstance_id = "instance-london"\nregion = "eu-west-2"\n'
        'bucket = "london-attachments"\nprefix = "uk/"\n'
    )
    result = run("parse", str(eml), "--config", str(config))
    assert result.returncode == 0, result.stderr
    dublin, london = json.loads(result.stdout)
    assert dublin["Attachments"][0]["S3Url"].startswith(
        "https://dublin-attachments.s3.eu-west-1.amazonaws.com/in/"
    )
    assert london["Attachments"][0]["S3Url"].startswith(
        "https://london-attachments.s3.eu-west-2.amazonaws.com/uk/"
    )
    original = london["References"]["Original email"]["Value"]
    assert original.startswith(
        "https://s3.console.aws.amazon.com/s3/object/london-attachments?region=eu-west-2&"
    )
    assert "prefix=uk%2F" in original


def test_a_bad_config_names_its_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[attachments]\nbucket = "b-1"\n[[routes]]\nmatch = "nope"\ninstance_id = "i"\n')
    result = run("serve", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.strip() == "mail-gateway: routes[0].match: must be an address, *@domain or *"


def test_swaks_through_the_sandbox(sandbox: Sandbox, tmp_path: Path) -> None:
    """The issue's acceptance check: the real swaks client against the real `sandbox` command."""
    swaks = shutil.which("swaks")
    if swaks is None:
        unavailable("swaks is not installed (apt-get install swaks; .ci/run does it)")
    first, second = tmp_path / "report.pdf", tmp_path / "photo.jpg"
    first.write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 20)
    second.write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(4000))
    subject = "Grüße aus Köln – 東京"
    encoded_subject = "=?UTF-8?B?" + base64.b64encode(subject.encode()).decode() + "?="
    command = [
        swaks, "--server", f"127.0.0.1:{sandbox.smtp_port}", "--from", "kunde@shop.test",
        "--to", "support@example.com", "--header", f"Subject: {encoded_subject}",
        "--header", "Cc: Chef <chef@shop.test>", "--header", "Message-Id: <swaks-1@shop.test>",
        "--body", "Bitte um Rückruf.",
        "--attach-type", "application/pdf", "--attach-name", "report.pdf", "--attach", f"@{first}",
        "--attach-type", "image/jpeg", "--attach-name", "photo.jpg", "--attach", f"@{second}",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.0.0 Delivered to Amazon Connect as contact" in result.stdout
    url = f"http://127.0.0.1:{sandbox.http_port}/_emulator/contacts"
    with urllib.request.urlopen(url, timeout=10) as response:
        [contact] = json.load(response)["contacts"]
    assert sandbox.next_line().startswith(f"contact {contact['ContactId']}  from kunde@shop.test")
    request = contact["Request"]
    assert request["FromEmailAddress"]["EmailAddress"] == "kunde@shop.test"
    assert request["DestinationEmailAddress"] == "support@example.com"
    raw = request["EmailMessage"]["RawMessage"]
    assert raw["Subject"] == subject
    assert raw["Body"].strip() == "Bitte um Rückruf."
    assert raw["Headers"]["MESSAGE_ID"] == "<swaks-1@shop.test>"
    assert request["AdditionalRecipients"]["CcAddresses"] == [
        {"EmailAddress": "chef@shop.test", "DisplayName": "Chef"}
    ]
    assert [a["FileName"] for a in request["Attachments"]] == ["report.pdf", "photo.jpg"]
    for attachment, path in zip(request["Attachments"], (first, second), strict=True):
        with urllib.request.urlopen(attachment["S3Url"], timeout=10) as download:
            assert download.read() == path.read_bytes()


def test_emulate_is_strict_when_told() -> None:
    import botocore.session

    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "emulate", "--port", "0", "--s3-port", "0", "--bucket", "my-bucket",
         "--instance", "i-1", "--address", "*@example.com"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        s3_line, connect_line = process.stdout.readline(), process.stdout.readline()
        assert "(bucket my-bucket)" in s3_line
        url = re.search(r"http://\S+", connect_line)
        assert url is not None, connect_line
        connect: Any = botocore.session.get_session().create_client(
            "connect", region_name="us-east-1", endpoint_url=url.group(0),
            aws_access_key_id="k", aws_secret_access_key="s",
        )  # fmt: skip
        raw = {"Subject": "s", "Body": "b", "ContentType": "text/plain"}
        request = {
            "InstanceId": "unknown",
            "FromEmailAddress": {"EmailAddress": "a@client.test"},
            "DestinationEmailAddress": "support@example.com",
            "EmailMessage": {"MessageSourceType": "RAW", "RawMessage": raw},
        }
        with pytest.raises(connect.exceptions.ResourceNotFoundException):
            connect.start_email_contact(**request)
        with pytest.raises(connect.exceptions.InvalidRequestException):
            connect.start_email_contact(
                **{**request, "InstanceId": "i-1", "DestinationEmailAddress": "x@other.org"}
            )
        assert connect.start_email_contact(**{**request, "InstanceId": "i-1"})["ContactId"]
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert process.returncode == 0


def test_queue_commands_on_a_spool(tmp_path: Path) -> None:
    from gateway.delivery.spool import Spool
    from gateway.errors import PermanentError
    from gateway.mail import InMemoryContent, ReceivedMail, Target
    from gateway.settings import RouteSettings

    spool = Spool(tmp_path / "spool")
    route = RouteSettings(match="support@example.com", instance_id="i-1")
    ids = [
        spool.put(
            ReceivedMail(
                "customer@client.test", ("support@example.com",), (Target(route, "support@example.com"),),
                InMemoryContent(f"Message-ID: <{n}@client.test>\r\n\r\nbody\r\n".encode()), "127.0.0.1",
                "client.test",
            )
        )
        for n in range(3)
    ]  # fmt: skip
    spool.failed(ids[0], 0, PermanentError("no", service="connect", code="InvalidRequestException"))
    spool.bury(ids[0], "connect: InvalidRequestException: no")
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[attachments]\nbucket = "b-1"\n[queue]\npath = "{tmp_path / "spool"}"\n'
        '[[routes]]\nmatch = "*"\ninstance_id = "i"\n'
    )
    listing = run("queue", "--config", str(config), "list")
    assert listing.returncode == 0
    lines = listing.stdout.splitlines()
    assert lines[0] == "queued 2  active 0  deferred 0  dead 1  parked 0  done 0"
    assert ids[0] in lines[1] and "dead" in lines[1] and "InvalidRequestException" in lines[1]
    shown = run("queue", "--config", str(config), "show", ids[0])
    assert f"queue id     {ids[0]}" in shown.stdout
    assert "message-id   <0@client.test>" in shown.stdout
    assert "contact #0   failed: instance i-1, destination support@example.com" in shown.stdout
    as_json = json.loads(run("queue", "--config", str(config), "--json", "show", ids[1]).stdout)
    assert as_json["state"] == "queued"
    assert run("queue", "--config", str(config), "retry", ids[0]).stdout.strip() == f"{ids[0]} queued again"
    assert run("queue", "--config", str(config), "delete", ids[2]).stdout.strip() == f"{ids[2]} deleted"
    missing = run("queue", "--config", str(config), "show", "nope")
    assert missing.returncode == 1
    assert (
        run("queue", "--config", str(config), "list").stdout.splitlines()[0].startswith("queued 2  active 0")
    )


def test_passwd_writes_a_line_the_gateway_accepts(tmp_path: Path) -> None:
    from gateway.frontdoor.credentials import Credentials

    result = subprocess.run(
        [sys.executable, "-m", "gateway", "passwd", "relay", "--stdin"],
        input="s3cret\n", capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("relay:$2b$")
    path = tmp_path / "users"
    path.write_text(result.stdout)
    assert Credentials.load(path).verify(b"relay", b"s3cret")


def test_queue_list_names_delivered_mail_by_its_contacts_and_retry_says_when_nothing_is_dead(
    tmp_path: Path,
) -> None:
    from gateway.delivery.spool import Spool
    from gateway.mail import InMemoryContent, ReceivedMail, Target
    from gateway.settings import RouteSettings

    spool = Spool(tmp_path / "spool")
    route = RouteSettings(match="*", instance_id="i-1")
    delivered = spool.put(
        ReceivedMail(
            "customer@client.test", ("a@example.com", "b@example.com"),
            (Target(route, "a@example.com"), Target(route, "b@example.com")),
            InMemoryContent(b"Message-ID: <d@client.test>\r\n\r\nbody\r\n"), "127.0.0.1", "client.test",
        )
    )  # fmt: skip
    spool.delivered(delivered, 0, "contact-a")
    spool.delivered(delivered, 1, "contact-b")
    spool.finish(delivered)
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[attachments]\nbucket = "b-1"\n[queue]\npath = "{tmp_path / "spool"}"\n'
        '[[routes]]\nmatch = "*"\ninstance_id = "i"\n'
    )
    [_, line] = run("queue", "--config", str(config), "list").stdout.splitlines()
    assert f"{delivered}  done" in line and "2 contacts" in line
    assert "tries" not in line
    retried = run("queue", "--config", str(config), "retry", "--all-dead")
    assert (retried.returncode, retried.stdout) == (0, "nothing to retry: no mail in the dead-letter area\n")


def test_passwd_without_a_terminal_says_how(tmp_path: Path) -> None:
    """No terminal to ask on (a script, a container) and no --stdin: a clean error, not an EOFError."""
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "passwd", "relay"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, cwd=ROOT,
        start_new_session=True,  # no controlling terminal, as under cron or in a container
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == (
        "mail-gateway: no terminal to ask for the password on; give it on standard input with --stdin\n"
    )
    assert result.stdout == ""


def test_parse_names_a_file_it_cannot_read() -> None:
    result = run("parse", "/nonexistent.eml")
    assert result.returncode == 1
    assert result.stderr == "mail-gateway: /nonexistent.eml: no such file or directory\n"


def test_output_into_a_reader_that_stops_ends_quietly(tmp_path: Path) -> None:
    """``mail-gateway parse big.eml | head -1``: no "Broken pipe", no traceback."""
    path = tmp_path / "big.eml"
    path.write_bytes(make_mail(text="line of text\n" * 200_000).as_bytes())  # megabytes of JSON
    with subprocess.Popen(
        [sys.executable, "-m", "gateway", "parse", str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
    ) as process:  # fmt: skip
        assert process.stdout is not None and process.stderr is not None
        assert process.stdout.readline() == b"[\n"
        process.stdout.close()  # as head does after its line
        stderr = process.stderr.read()
        process.wait(timeout=60)
    assert stderr == b""
    assert process.returncode == 1
