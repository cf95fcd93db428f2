"""``mail-gateway sandbox`` as a staging user runs it: a test suite's burst from one address is never
throttled, and ``--config`` runs a real configuration's gateway against the emulated Connect and S3."""

from __future__ import annotations

import json
import re
import shutil
import smtplib
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from gateway.aws.placement import Placement, placement, route_attachments
from gateway.sandbox.run import SANDBOX_BUCKET, configured_sandbox
from gateway.settings import AttachmentSettings, AwsSettings, RouteSettings, Settings, SmtpSettings

from ..helpers import ROOT, Sandbox, eventually, make_mail, running_sandbox

MAILS = 300  # "300 mails a minute": sent as fast as this machine can, which is faster; checked by counts
CLIENTS = 10  # a test suite running in parallel, each test opening its own connection


def emulated_contacts(sandbox: Sandbox) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{sandbox.http_port}/_emulator/contacts"
    with urllib.request.urlopen(url, timeout=10) as response:
        contacts: list[dict[str, Any]] = json.load(response)["contacts"]
    return contacts


def deliver(port: int, raw: bytes, recipients: list[str]) -> tuple[int, str]:
    """One mail on its own connection; the first refusal, or the reply to DATA."""
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.ehlo("app.staging.test")
        code, text = client.mail("app@staging.test")
        for recipient in recipients:
            if code == 250:
                code, text = client.rcpt(recipient)
        if code == 250:
            code, text = client.data(raw)
        return code, text.decode()


def test_a_test_suite_sending_300_mails_from_one_address_gets_300_times_250(sandbox: Sandbox) -> None:
    def send(number: int) -> tuple[int, str]:
        mail = make_mail(sender="app@staging.test", subject=f"Order {number}", message_id=f"<{number}@app>")
        return deliver(sandbox.smtp_port, mail.as_bytes(), ["support@example.com"])

    with ThreadPoolExecutor(CLIENTS) as pool:
        replies = list(pool.map(send, range(MAILS)))
    assert [code for code, _ in replies] == [250] * MAILS, {text for code, text in replies if code != 250}
    assert all(text.startswith("2.0.0 Delivered to Amazon Connect as contact") for _, text in replies)
    subjects = {c["Request"]["EmailMessage"]["RawMessage"]["Subject"] for c in emulated_contacts(sandbox)}
    assert subjects == {f"Order {number}" for number in range(MAILS)}


def test_sandbox_with_a_config_is_that_files_gateway(tmp_path: Path) -> None:
    """examples/staging.toml: its routes and rules, the sandbox's listeners, endpoints and bucket."""
    config = tmp_path / "staging.toml"
    shutil.copy(ROOT / "examples" / "staging.toml", config)
    with running_sandbox("--config", str(config), cwd=tmp_path) as sandbox:
        assert sandbox.started.splitlines()[0] == (
            f"Config     {config}: everything from the file (queue mode sync) except what the sandbox "
            "provides: the listen addresses, the AWS endpoints (emulated) and the bucket, each route's own "
            "role, endpoints and bucket included"
        )
        assert "(send mail here; the file's 2 route(s))" in sandbox.started
        raw = make_mail(to="support@example.com, agent@help.example.com").as_bytes()
        port = sandbox.smtp_port
        assert deliver(port, raw, ["nobody@example.com"]) == (
            550,
            "5.1.1 No mailbox <nobody@example.com> here",
        )
        assert deliver(port, raw, ["someone@elsewhere.test"])[0] == 550  # not served: a relay attempt
        code, text = deliver(port, raw, ["support@example.com", "agent@help.example.com"])
        assert code == 250, text
        contacts = {c["Request"]["DestinationEmailAddress"]: c["Request"] for c in emulated_contacts(sandbox)}
    assert set(contacts) == {"support@example.com", "help@example.com"}
    support, help_desk = contacts["support@example.com"], contacts["help@example.com"]
    assert support["InstanceId"] == "8f1c2d3e-0000-4000-8000-000000000001"
    assert support["Attributes"] == {"team": "support"}
    assert help_desk["References"] == {"Portal": {"Type": "URL", "Value": "https://portal.example.com"}}
    assert not (tmp_path / "staging-spool").exists()  # sync mode: nothing spooled


def test_a_route_placed_in_production_reaches_the_emulator_and_the_sandbox_bucket(tmp_path: Path) -> None:
    """A route with its own region, role, bucket and endpoints: its contact is made in the emulator, in
    its region, under the sandbox's credentials, with its attachment in the sandbox's bucket."""
    config = tmp_path / "staging.toml"
    config.write_text(
        (ROOT / "examples" / "staging.toml")
        .read_text()
        .replace(
            'destination = "help@example.com"\n',
            'destination = "help@example.com"\nregion = "eu-west-2"\n'
            'role_arn = "arn:aws:iam::123456789012:role/connect-email"\nexternal_id = "prod-secret"\n'
            'bucket = "prod-london-attachments"\nprefix = "uk/"\n'
            'connect_endpoint_url = "https://connect.eu-west-2.amazonaws.com"\n'
            's3_endpoint_url = "https://s3.eu-west-2.amazonaws.com"\n'
            'sts_endpoint_url = "https://sts.eu-west-2.amazonaws.com"\n',
        )
    )
    raw = make_mail(attachments=[("a.pdf", "application/pdf", b"data")]).as_bytes()
    with running_sandbox("--config", str(config), cwd=tmp_path) as sandbox:
        [s3_url] = re.findall(r"^S3 +(\S+)", sandbox.started, re.MULTILINE)
        code, text = deliver(sandbox.smtp_port, raw, ["agent@help.example.com"])
        assert code == 250, text
        # The emulator fetches the file from the sandbox's S3 after answering, as Connect does.
        [contact] = eventually(
            lambda: [c for c in emulated_contacts(sandbox) if c["Attachments"][0]["fetched"]]
        )
    assert (contact["Region"], contact["AccessKeyId"]) == ("eu-west-2", "sandbox")
    [attachment] = contact["Request"]["Attachments"]
    assert attachment["S3Url"].startswith(f"{s3_url}/{SANDBOX_BUCKET}/uk/")


def test_a_configured_sandbox_replaces_a_routes_own_placement() -> None:
    """A route with its own role, endpoints and bucket reaches the emulator and the sandbox's bucket under
    the sandbox's credentials, never production's; its region and prefix stay (the records show them)."""
    production = RouteSettings(
        match="*@example.com",
        instance_id="instance-london",
        region="eu-west-2",
        role_arn="arn:aws:iam::123456789012:role/connect-email",
        external_id="prod-secret",
        bucket="prod-london-attachments",
        prefix="london/",
        connect_endpoint_url="https://connect.eu-west-2.amazonaws.com",
        s3_endpoint_url="https://s3.eu-west-2.amazonaws.com",
        sts_endpoint_url="https://sts.eu-west-2.amazonaws.com",
    )
    settings = Settings(
        smtp=SmtpSettings(hostname="mx.example.com"),
        aws=AwsSettings(region="eu-west-1", connect_endpoint_url="https://connect.prod.example"),
        attachments=AttachmentSettings("prod-attachments", prefix="mail/"),
        routes=(production,),
    )
    sandbox = configured_sandbox(settings, 2525, "http://127.0.0.1:8025", "http://127.0.0.1:9000")
    [route] = sandbox.routes
    assert (route.match, route.instance_id) == ("*@example.com", "instance-london")
    assert placement(route, sandbox.aws) == Placement(
        region="eu-west-2",
        connect_endpoint_url="http://127.0.0.1:8025",
        s3_endpoint_url="http://127.0.0.1:9000",
    )
    attachments = route_attachments(route, sandbox.attachments)
    assert (attachments.bucket, attachments.prefix) == (SANDBOX_BUCKET, "london/")
