"""Reloading a running ``mail-gateway serve`` (a real process): a valid new configuration through
``mail-gateway reload`` (check, then SIGHUP through the pid file) and an invalid one through SIGHUP itself.
"""

from __future__ import annotations

import signal
import smtplib
import subprocess
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.service.reload import pid_file, signal_reload

from .helpers import eventually, mail
from .test_cli_operations import (
    ROUTE,
    Emulator,
    FreePorts,
    fetch,
    gateway,
    serving,
    strict_emulator,
)

__all__ = ["strict_emulator"]  # the fixture, shared with the check tests

SALES = '[[routes]]\nmatch = "sales@example.com"\ninstance_id = "i-1"\ndestination = "support@example.com"\n'


def metric(http_port: int, name: str) -> float:
    for line in fetch(http_port, "/metrics").decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def configure(
    emulator: Emulator, path: Path, smtp_port: int, http_port: int, routes: str, queue: str
) -> Path:
    tables = f'[smtp]\nlisten = "127.0.0.1:{smtp_port}"\n[http]\nlisten = "127.0.0.1:{http_port}"\n'
    return emulator.config(path, "attachments", routes, tables, queue=queue)


def first_configuration(emulator: Emulator, tmp_path: Path) -> tuple[Path, int, int]:
    """The route of the check tests, on two free ports: the file, the SMTP port and the HTTP port."""
    with FreePorts() as (smtp_port, http_port):
        path = tmp_path / "gateway.toml"
        configure(emulator, path, smtp_port, http_port, ROUTE, 'retry_initial = "50ms"')
    return path, smtp_port, http_port


def test_a_valid_new_configuration_serves_new_sessions_while_open_ones_finish(
    strict_emulator: Emulator, tmp_path: Path
) -> None:
    path, smtp_port, http_port = first_configuration(strict_emulator, tmp_path)
    with serving(path, http_port) as process:
        assert (tmp_path / "spool" / "mail-gateway.pid").read_text().strip() == str(process.pid)
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as before:
            before.ehlo("client.test")
            assert before.mail("kunde@client.test")[0] == 250
            assert before.rcpt("support@example.com")[0] == 250
            assert before.rcpt("sales@example.com")[0] == 550  # no such route yet

            # A new route, and a setting that needs a restart.
            configure(strict_emulator, path, smtp_port, http_port, ROUTE + SALES, "workers = 2")
            result = gateway("reload", "--config", str(path))
            assert result.returncode == 0, result.stdout + result.stderr
            assert f"pid {process.pid}" in result.stdout
            eventually(lambda: metric(http_port, "mail_gateway_config_reloads_total") == 1)

            # A session opened after the reload has the new route at once...
            with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as after:
                after.sendmail("kunde@client.test", ["sales@example.com"], mail("<after@client.test>"))
            # ...and the one opened before finishes under the configuration it started with.
            assert before.rcpt("sales@example.com")[0] == 550
            code, _ = before.data(mail("<before@client.test>"))
            assert code == 250
        eventually(lambda: metric(http_port, "mail_gateway_contacts_created_total") == 2, seconds=30)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "need a restart to change: queue (workers, readers, retries, ages)" in stderr
    assert not (tmp_path / "spool" / "mail-gateway.pid").exists()


def test_an_invalid_new_configuration_leaves_the_old_one_serving(
    strict_emulator: Emulator, tmp_path: Path
) -> None:
    path, smtp_port, http_port = first_configuration(strict_emulator, tmp_path)
    with serving(path, http_port) as process:
        path.write_text(path.read_text() + '\n[[routes]]\nmatch = "no address"\ninstance_id = "i-1"\n')
        refused = gateway("reload", "--config", str(path))
        assert refused.returncode == 2 and "routes[1].match" in refused.stderr  # never sent
        process.send_signal(signal.SIGHUP)  # as a careless operator would
        eventually(lambda: metric(http_port, "mail_gateway_config_reload_failures_total") == 1)
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as client:
            client.sendmail("kunde@client.test", ["support@example.com"], mail("<still@client.test>"))
        eventually(lambda: metric(http_port, "mail_gateway_contacts_created_total") == 1, seconds=30)
        assert metric(http_port, "mail_gateway_config_reloads_total") == 0
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "configuration not reloaded, the running one stays" in stderr
    assert "routes[1].match: must be an address, *@domain or *" in stderr


def test_a_pid_file_left_by_a_killed_gateway_signals_no_other_process(tmp_path: Path) -> None:
    """After a SIGKILL the pid file stays; its pid may belong to another process by then: never SIGHUP it
    (its default action would end it)."""
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[attachments]\nbucket = "b-1"\n[queue]\npath = "{tmp_path / "spool"}"\n'
        '[[routes]]\nmatch = "*"\ninstance_id = "i"\n'
    )
    settings = load_config(config)
    other = subprocess.Popen(["sleep", "30"])
    try:
        pid_file(settings).parent.mkdir(parents=True)
        pid_file(settings).write_text(f"{other.pid}\n")
        with pytest.raises(OSError, match="not a mail gateway"):
            signal_reload(settings)
        assert other.poll() is None  # still running: no signal reached it
    finally:
        other.kill()
        other.wait()
