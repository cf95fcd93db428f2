"""The operator's commands as processes: ``check`` against a strict emulator, ``serve``'s JSON log line,
and the sandbox's health routes."""

from __future__ import annotations

import json
import os
import re
import signal
import smtplib
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import ROOT, Sandbox, mail

ENVIRONMENT = {
    **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
    "AWS_ACCESS_KEY_ID": "sandbox",
    "AWS_SECRET_ACCESS_KEY": "sandbox",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


def gateway(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=ENVIRONMENT,
    )  # fmt: skip


class Emulator:
    def __init__(self, connect_url: str, s3_url: str) -> None:
        self.connect_url = connect_url
        self.s3_url = s3_url

    def config(self, path: Path, bucket: str, routes: str, tables: str = "", queue: str = "") -> Path:
        """A configuration against this emulator; ``tables`` adds whole tables, ``queue`` [queue] keys."""
        path.write_text(
            f'[aws]\nconnect_endpoint_url = "{self.connect_url}"\ns3_endpoint_url = "{self.s3_url}"\n'
            f'[attachments]\nbucket = "{bucket}"\n[queue]\npath = "{path.parent / "spool"}"\n{queue}\n'
            f"{tables}\n{routes}"
        )
        return path


@pytest.fixture(scope="module")
def strict_emulator() -> Iterator[Emulator]:
    """``mail-gateway emulate`` that knows one instance, one address and one flow, with an S3 bucket."""
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "emulate", "--port", "0", "--s3-port", "0",
         "--bucket", "attachments", "--instance", "i-1", "--address", "support@example.com",
         "--flow", "flow-1", "--allowed-host", "staging.corp.example"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
    )  # fmt: skip
    assert process.stdout is not None
    s3_line, connect_line = process.stdout.readline(), process.stdout.readline()
    s3 = re.search(r"http://\S+", s3_line)
    connect = re.search(r"http://\S+", connect_line)
    assert s3 is not None and connect is not None, s3_line + connect_line
    try:
        yield Emulator(connect.group(0), s3.group(0))
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


ROUTE = '[[routes]]\nmatch = "support@example.com"\ninstance_id = "i-1"\ncontact_flow_id = "flow-1"\n'


def test_check_passes_against_the_emulator(strict_emulator: Emulator, tmp_path: Path) -> None:
    config = strict_emulator.config(tmp_path / "gateway.toml", "attachments", ROUTE)
    result = gateway("check", "--config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "PASS config: 1 route(s)",
        "PASS credentials: found",
        "PASS instance i-1: exists (ACTIVE)",
        "PASS destination support@example.com in instance i-1: an email address of the instance",
        "PASS contact flow flow-1 in instance i-1: exists (ACTIVE)",
        "PASS bucket attachments: put, presigned GET and delete work",
    ]


def page_status(url: str, host: str) -> int:
    request = urllib.request.Request(url, headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_emulate_shows_its_page_only_to_names_it_was_given(strict_emulator: Emulator) -> None:
    """``--allowed-host`` admits a staging name; any other name is refused (DNS rebinding)."""
    page = strict_emulator.connect_url + "/"
    assert page_status(page, "staging.corp.example") == 200
    assert page_status(page, "127.0.0.1") == 200
    assert page_status(page, "rebound.attacker.example") == 421


def test_check_names_each_broken_item(strict_emulator: Emulator, tmp_path: Path) -> None:
    routes = (
        '[[routes]]\nmatch = "a@example.com"\ninstance_id = "i-404"\n'
        '[[routes]]\nmatch = "b@example.com"\ninstance_id = "i-1"\ndestination = "other@example.com"\n'
        '[[routes]]\nmatch = "support@example.com"\ninstance_id = "i-1"\ncontact_flow_id = "flow-404"\n'
    )
    config = strict_emulator.config(tmp_path / "gateway.toml", "no-such-bucket", routes)
    result = gateway("check", "--config", str(config))
    assert result.returncode == 1
    failures = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert failures == [
        "FAIL instance i-404: connect: ResourceNotFoundException: Instance i-404 not found",
        "FAIL destination other@example.com in instance i-1: not an email address of the instance: "
        "contacts would be refused",
        "FAIL contact flow flow-404 in instance i-1: connect: ResourceNotFoundException: "
        "Contact flow flow-404 not found",
        "FAIL bucket no-such-bucket: s3: NoSuchBucket: The specified bucket does not exist",
    ]
    assert "PASS destination support@example.com in instance i-1" in result.stdout


def test_check_without_credentials_says_so(tmp_path: Path) -> None:
    """An endpoint off this machine needs real ones (TEST-NET: never reached, the check stops first)."""
    config = Emulator("http://192.0.2.1:8025", "http://192.0.2.1:8026").config(
        tmp_path / "gateway.toml", "attachments", ROUTE
    )
    bare = {k: v for k, v in ENVIRONMENT.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "--config", str(config)],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=bare,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1].startswith("FAIL credentials: none found")


def test_check_against_the_emulator_as_the_example_says(tmp_path: Path) -> None:
    """examples/emulator.toml with the emulator its comment starts, and no AWS credentials at all."""
    example = (ROOT / "examples" / "emulator.toml").read_text()
    [command] = [line.strip("# ").split() for line in example.splitlines() if "mail-gateway emulate" in line]
    arguments = command[command.index("emulate") + 1 :]
    for flag in ("--port", "--s3-port"):  # the same command on ports free right now
        arguments[arguments.index(flag) + 1] = "0"
    bare = {k: v for k, v in ENVIRONMENT.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "emulate", *arguments],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        s3 = re.search(r"http://\S+", process.stdout.readline())
        connect = re.search(r"http://\S+", process.stdout.readline())
        assert s3 is not None and connect is not None
        config = tmp_path / "emulator.toml"
        config.write_text(
            example.replace("http://127.0.0.1:8025", connect.group(0)).replace(
                "http://127.0.0.1:8026", s3.group(0)
            )
        )
        result = subprocess.run(
            [sys.executable, "-m", "gateway", "check", "--config", str(config)],
            capture_output=True, text=True, timeout=60, cwd=tmp_path, env=bare,
        )  # fmt: skip
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    instance, flow = "8f1c2d3e-0000-4000-8000-000000000001", "4a2e0000-0000-4000-8000-00000000000f"
    assert result.stdout.splitlines() == [
        "PASS config: 1 route(s)",
        "PASS credentials: none needed: every endpoint is on this machine",
        f"PASS instance {instance}: exists (ACTIVE)",
        f"PASS destination support@example.com in instance {instance}: an email address of the instance",
        f"PASS contact flow {flow} in instance {instance}: exists (ACTIVE)",
        "PASS bucket emulator-attachments: put, presigned GET and delete work",
    ]


def test_check_logs_as_the_log_table_says(strict_emulator: Emulator, tmp_path: Path) -> None:
    """JSON by default, as serve logs: botocore's own line about the credentials it found included."""
    config = strict_emulator.config(tmp_path / "gateway.toml", "attachments", ROUTE)
    result = gateway("check", "--config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert any(r["logger"].endswith("botocore.credentials") for r in records), result.stderr


def test_check_loads_the_certificate_as_the_server_would(strict_emulator: Emulator, tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("not PEM\n")
    tls = f'[tls]\ncertificate = "{tmp_path / "cert.pem"}"\nkey = "{tmp_path / "cert.pem"}"\n'
    config = strict_emulator.config(tmp_path / "gateway.toml", "attachments", ROUTE, tls)
    result = gateway("check", "--config", str(config))
    assert result.returncode == 1
    assert result.stdout.splitlines()[1] == (
        f"FAIL tls: tls.certificate: {tmp_path / 'cert.pem'} is not a PEM certificate "
        "(no -----BEGIN ...CERTIFICATE----- line)"
    )


def test_check_warns_of_relays_behind_a_proxy(strict_emulator: Emulator, tmp_path: Path) -> None:
    """Without the PROXY header every client arrives from the load balancer: a relay, if it is listed."""
    access = '[access]\nproxy_trusted = ["10.1.0.0/16"]\nrelay_networks = ["127.0.0.0/8", "10.0.0.0/8"]\n'
    config = strict_emulator.config(tmp_path / "gateway.toml", "attachments", ROUTE, access)
    result = gateway("check", "--config", str(config))
    assert result.returncode == 0, result.stdout  # a warning, not a failure
    assert result.stdout.splitlines()[1] == (
        "WARN access.relay_networks: 10.0.0.0/8 holds a load balancer of proxy_trusted while proxy_protocol "
        "is off: every client it forwards would count as a relay, free of the per-client limits"
    )
    with_proxy = access.replace("[access]\n", "[access]\nproxy_protocol = true\n")
    config = strict_emulator.config(tmp_path / "gateway.toml", "attachments", ROUTE, with_proxy)
    assert "WARN" not in gateway("check", "--config", str(config)).stdout


def test_serve_logs_one_json_line_per_mail(strict_emulator: Emulator, tmp_path: Path) -> None:
    """``serve`` follows [log]: JSON on stderr, one ``gateway.mail`` line, no addresses."""
    with FreePorts() as (smtp_port, http_port):
        tables = f'[smtp]\nlisten = "127.0.0.1:{smtp_port}"\n[http]\nlisten = "127.0.0.1:{http_port}"\n'
        config = strict_emulator.config(
            tmp_path / "gateway.toml", "attachments", ROUTE, tables, queue='retry_initial = "50ms"'
        )
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=ENVIRONMENT,
    )  # fmt: skip
    try:
        wait_until_listening(http_port)
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as client:
            client.sendmail("kunde@client.test", ["support@example.com"], mail("<serve-1@client.test>"))
        deadline = time.monotonic() + 30
        while b"mail_gateway_contacts_created_total 1.0" not in fetch(http_port, "/metrics"):
            assert time.monotonic() < deadline, "no contact in time"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    records = [json.loads(line) for line in stderr.splitlines()]
    [line] = [r for r in records if r["logger"] == "gateway.mail"]
    assert line["outcome"] == "delivered" and line["message_id"] == "<serve-1@client.test>"
    assert len(line["contacts"]) == 1 and line["recipients"] == 1 and line["queue_id"]
    assert "kunde@client.test" not in stderr and "support@example.com" not in stderr


def test_the_sandbox_serves_health_and_metrics_on_its_http_port(sandbox: Sandbox) -> None:
    port = sandbox.http_port
    assert json.loads(fetch(port, "/healthz")) == {"status": "alive"}
    assert json.loads(fetch(port, "/readyz")) == {"status": "ready", "reason": "ok"}
    with smtplib.SMTP("127.0.0.1", sandbox.smtp_port, timeout=30) as client:
        client.sendmail("kunde@client.test", ["support@example.com"], mail("<sandbox-1@client.test>"))
    metrics = fetch(port, "/metrics").decode()
    assert "mail_gateway_contacts_created_total 1.0" in metrics
    assert "mail_gateway_mails_accepted_total 1.0" in metrics


class FreePorts:
    """Two free loopback ports: bound while the block runs, free for a child process after it."""

    def __enter__(self) -> tuple[int, int]:
        import socket

        self._sockets = [socket.socket() for _ in range(2)]
        for probe in self._sockets:
            probe.bind(("127.0.0.1", 0))
        return self._sockets[0].getsockname()[1], self._sockets[1].getsockname()[1]

    def __exit__(self, *exc: object) -> None:
        for probe in self._sockets:
            probe.close()


def fetch(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        body: bytes = response.read()
        return body


def wait_until_listening(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            fetch(port, "/healthz")
            return
        except (urllib.error.URLError, ConnectionError):
            assert time.monotonic() < deadline, f"nothing listening on {port}"
            time.sleep(0.05)
