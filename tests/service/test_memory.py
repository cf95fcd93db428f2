"""A large mail costs the gateway a bounded amount of memory, not its size several times over.

The gateway runs as ``mail-gateway serve`` (spool mode), and its resident memory, summed over its process
tree (its reader processes included), is sampled while smtplib sends one 40 MiB DATA of
2-byte lines: the worst shape for a reader that keeps lines as objects. Its peak may grow by at most
1.5 times the mail's size (issue 12; before streaming it grew by 1.44 GB).
"""

from __future__ import annotations

import smtplib
import subprocess
import sys
from pathlib import Path

from ..helpers import ROOT, eventually, free_port
from ..processes import PeakSampler, settled, tree_rss

MIB = 1024 * 1024
SIZE = 40 * MIB
READY_PROCESSES = 2  # the gateway and its first reader (a second starts only when mails wait)
HEADER = (
    b"From: a@client.test\r\nTo: support@example.com\r\nSubject: lines\r\nMessage-ID: <m@client.test>\r\n\r\n"
)


def test_one_40_mib_mail_of_2_byte_lines_grows_the_peak_by_at_most_one_and_a_half_times_its_size(
    tmp_path: Path,
) -> None:
    port, nowhere = free_port(), free_port()  # AWS unreachable: the mail stays in the spool
    config = tmp_path / "gateway.toml"
    config.write_text(
        f"""
[smtp]
listen = "127.0.0.1:{port}"
hostname = "mx.memory.test"
[aws]
connect_endpoint_url = "http://127.0.0.1:{nowhere}"
s3_endpoint_url = "http://127.0.0.1:{nowhere}"
[attachments]
bucket = "memory-test"
[queue]
path = "{tmp_path / "spool"}"
min_free_disk = 0
retry_initial = "1h"
[http]
listen = ""
[[routes]]
match = "support@example.com"
instance_id = "memory-instance"
"""
    )
    mail = HEADER + b"\r\n" * ((SIZE - len(HEADER)) // 2)
    environment = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "PATH": "/usr/bin:/bin"}
    gateway = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        eventually(lambda: _listening(port), seconds=30)
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
            # A first mail is read, and the readers have imported what they need: the growth measured is
            # then the DATA path's alone.
            client.sendmail("a@client.test", ["support@example.com"], HEADER + b"warm\r\n")
            eventually(lambda: settled(gateway.pid, READY_PROCESSES), seconds=30)
            idle = tree_rss(gateway.pid)
            with PeakSampler(gateway.pid) as sampler:
                client.sendmail("a@client.test", ["support@example.com"], mail)
        growth = sampler.peak - idle
        assert growth <= 1.5 * SIZE, (
            f"the peak grew by {growth / MIB:.0f} MiB for a {SIZE / MIB:.0f} MiB mail"
        )
    finally:
        gateway.terminate()
        _, errors = gateway.communicate(timeout=30)
    assert gateway.returncode == 0, errors.decode()


def _listening(port: int) -> bool:
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
            return client.noop()[0] == 250
    except OSError:
        return False
