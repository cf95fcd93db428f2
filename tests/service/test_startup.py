"""Every way the gateway can fail to start ends in one line naming the cause and a non-zero status, never a
traceback: run as a user runs it, ``mail-gateway serve`` in a child process.

Permission problems are real ones: as root (who reads every file and binds every port), the child runs
without the capabilities that let root do so (``setpriv``), so the kernel refuses it as it refuses a user.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from gateway.errors import StartupError
from gateway.frontdoor.tls import server_context
from gateway.service.preflight import local_checks
from gateway.settings import (
    AttachmentSettings,
    AwsSettings,
    FilterSettings,
    Settings,
    SmtpSettings,
    TlsSettings,
)

from ..helpers import ROOT, unavailable

ENVIRONMENT = {
    **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
# What lets root read any file and bind any port; without them root is refused like anyone else.
PRIVILEGES = "-dac_override,-dac_read_search,-net_bind_service"


def unprivileged() -> list[str]:
    """The prefix that runs a command without privileges over files and low ports."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        unavailable("setpriv (util-linux) is needed to drop root's privileges")
    return [setpriv, "--bounding-set", PRIVILEGES]


def serve(config: Path, prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(prefix or []), sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=ENVIRONMENT,
    )  # fmt: skip


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single line a failed start prints: no traceback, no library noise."""
    assert result.returncode != 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
def listening() -> Iterator[int]:
    """A loopback port some other program listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield int(other.getsockname()[1])


def write_config(directory: Path, *tables: str, smtp_port: int = 0, http: str = "") -> Path:
    path = directory / "gateway.toml"
    path.write_text(
        f'[smtp]\nlisten = "127.0.0.1:{smtp_port}"\n[http]\nlisten = "{http}"\n'
        f'[attachments]\nbucket = "b-1"\n[queue]\npath = "{directory / "spool"}"\n'
        + "\n".join(tables)
        + '\n[[routes]]\nmatch = "*"\ninstance_id = "i-1"\n'
    )
    return path


def test_an_smtp_port_in_use_is_named(tmp_path: Path, listening: int) -> None:
    result = serve(write_config(tmp_path, smtp_port=listening))
    assert result.returncode == 1
    assert one_line(result) == (
        f"mail-gateway: smtp.listen: cannot listen on 127.0.0.1:{listening}: address already in use "
        "(another program, or another gateway, listens there)"
    )


def test_an_http_port_in_use_is_named(tmp_path: Path, listening: int) -> None:
    result = serve(write_config(tmp_path, http=f"127.0.0.1:{listening}"))
    assert result.returncode == 1
    assert one_line(result).startswith(
        f"mail-gateway: http.listen: cannot listen on 127.0.0.1:{listening}: address already in use"
    )


def test_a_certificate_that_is_not_pem_is_named(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("this is not a certificate\n")
    (tmp_path / "key.pem").write_text("nor a key\n")
    tls = f'[tls]\ncertificate = "{tmp_path / "cert.pem"}"\nkey = "{tmp_path / "key.pem"}"\n'
    result = serve(write_config(tmp_path, tls))
    assert result.returncode == 1
    assert one_line(result) == (
        f"mail-gateway: tls.certificate: {tmp_path / 'cert.pem'} is not a PEM certificate "
        "(no -----BEGIN ...CERTIFICATE----- line)"
    )


def test_a_low_port_without_the_privilege_is_named(tmp_path: Path) -> None:
    result = serve(write_config(tmp_path, smtp_port=25), unprivileged())
    assert result.returncode == 1
    assert one_line(result) == (
        "mail-gateway: smtp.listen: cannot listen on 127.0.0.1:25: permission denied "
        "(a port below 1024 needs root or the CAP_NET_BIND_SERVICE capability)"
    )


def test_a_spool_it_may_not_write_is_named(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    spool.chmod(0o500)
    result = serve(write_config(tmp_path), unprivileged())
    assert result.returncode == 1
    assert one_line(result) == f"mail-gateway: queue.path: cannot use the spool at {spool}: permission denied"


def test_unreadable_files_are_named(tmp_path: Path) -> None:
    secret = tmp_path / "cert.pem"
    secret.write_text("-----BEGIN CERTIFICATE-----\n")
    secret.chmod(0)
    tls = f'[tls]\ncertificate = "{secret}"\nkey = "{secret}"\n'
    result = serve(write_config(tmp_path, tls), unprivileged())
    assert result.returncode == 2
    assert one_line(result) == f"mail-gateway: tls.certificate: {secret} is not a readable file"
    config = write_config(tmp_path)
    config.chmod(0)
    result = serve(config, unprivileged())
    assert result.returncode == 2
    assert one_line(result) == (
        f"mail-gateway: {config}: cannot read the configuration file (Permission denied)"
    )


def test_an_arn_as_instance_id_names_the_id_inside_it(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        '[attachments]\nbucket = "b-1"\n[[routes]]\nmatch = "*"\n'
        'instance_id = "arn:aws:connect:eu-west-2:111122223333:instance/'
        '8f1c2d3e-0000-4000-8000-000000000001"\n'
    )
    result = serve(config)
    assert result.returncode == 2
    assert one_line(result) == (
        "mail-gateway: routes[0].instance_id: is an ARN; give the instance id inside it: "
        "8f1c2d3e-0000-4000-8000-000000000001"
    )


@pytest.fixture(scope="module")
def pems(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A certificate with its key, another certificate's key, and the first key under a passphrase."""
    directory = tmp_path_factory.mktemp("pems")
    ca = trustme.CA()
    issued, other = ca.issue_cert("mx.gateway.test"), ca.issue_cert("other.test")
    issued.cert_chain_pems[0].write_to_path(str(directory / "cert.pem"))
    issued.private_key_pem.write_to_path(str(directory / "key.pem"))
    other.private_key_pem.write_to_path(str(directory / "other.key"))
    key = serialization.load_pem_private_key(issued.private_key_pem.bytes(), None)
    encrypted = serialization.BestAvailableEncryption(b"secret")
    (directory / "encrypted.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encrypted)
    )
    (directory / "damaged.pem").write_text(
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n"
    )
    return directory


@pytest.mark.parametrize(
    ("certificate", "key", "expected"),
    [
        ("key.pem", "key.pem", "tls.certificate: {dir}/key.pem is not a PEM certificate"),
        ("cert.pem", "cert.pem", "tls.key: {dir}/cert.pem is not a PEM private key"),
        (
            "cert.pem",
            "other.key",
            "tls.key: {dir}/other.key is not the key of the certificate {dir}/cert.pem",
        ),
        ("cert.pem", "encrypted.key", "tls.key: {dir}/encrypted.key is protected by a passphrase"),
        (
            "damaged.pem",
            "key.pem",
            "tls.certificate: {dir}/damaged.pem or {dir}/key.pem has a damaged PEM block",
        ),
        ("missing.pem", "key.pem", "tls.certificate: {dir}/missing.pem: no such file or directory"),
    ],
)
def test_each_tls_problem_is_named(pems: Path, certificate: str, key: str, expected: str) -> None:
    with pytest.raises(StartupError) as caught:
        server_context(TlsSettings(certificate=pems / certificate, key=pems / key))
    assert str(caught.value).startswith(expected.format(dir=pems))


def test_a_good_pair_loads(pems: Path) -> None:
    context = server_context(TlsSettings(certificate=pems / "cert.pem", key=pems / "key.pem"))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_check_warns_when_memory_is_short_for_the_default_connections() -> None:
    """The default never goes below 50 connections; a small machine is told what that may cost, and the
    sender checks and filters, which read each mail whole, count the size limit once per connection."""
    settings = Settings(SmtpSettings(), AwsSettings(), AttachmentSettings("b-1"), ())
    [warning] = local_checks(settings, memory=64 * 1024**2)
    assert str(warning) == (
        "WARN limits.max_connections: 100 connections may need 75 MiB at once, more than this machine's "
        "64 MiB: lower limits.max_connections"
    )
    assert local_checks(settings, memory=2 * 1024**3) == []
    judged = replace(settings, filters=FilterSettings(rspamd_url="http://127.0.0.1:11333"))
    [warning] = local_checks(judged, memory=2 * 1024**3)
    assert str(warning) == (
        "WARN limits.max_connections: 100 connections of 40 MiB mails judged whole may need 4,075 MiB at "
        "once, more than this machine's 2,048 MiB: lower limits.max_connections or smtp.max_message_size"
    )


def test_the_sandbox_names_its_own_options(listening: int) -> None:
    """The sandbox has no listen keys: a busy port is named by the option that chose it."""
    for option, other in (("--smtp-port", "--http-port"), ("--http-port", "--smtp-port")):
        result = subprocess.run(
            [sys.executable, "-m", "gateway", "sandbox", option, str(listening), other, "0"],
            capture_output=True, text=True, timeout=60, cwd=ROOT, env=ENVIRONMENT,
        )  # fmt: skip
        assert result.returncode == 1
        assert one_line(result).startswith(
            f"mail-gateway: {option}: cannot listen on 127.0.0.1:{listening}: address already in use"
        )
