"""A real full disk under the spool (a small tmpfs filled to the last byte) while Connect fails: the gateway
refuses new mail with a 4xx, says it is not ready, and once space and Connect return it delivers every mail
it had accepted without a restart."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.sandbox.emulator import EmulatorServer
from gateway.sandbox.s3server import EmbeddedS3
from gateway.service.gateway import Gateway

from ..helpers import (
    CREDENTIALS,
    SmtpClient,
    contacts,
    http_get,
    mail,
    make_mail,
    make_settings,
    put_faults,
    spool_settings,
    wait_until,
)

DISK_SIZE = 8 * 1024 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of 8 MiB: mounting needs root (or sudo), which CI has; elsewhere the test skips."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    as_root = [] if os.geteuid() == 0 else ["sudo", "-n"]  # as .ci/run installs packages
    mounted = subprocess.run(
        [*as_root, "mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE},mode=1777", "tmpfs", str(mount_point)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must be able to mount a tmpfs (run as root): {mounted.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run([*as_root, "umount", "-l", str(mount_point)], check=False)


def fill(disk: Path) -> Path:
    """Write until the file system has not one byte left; returns the file that took it."""
    filler = disk / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 1):  # big pieces, then the last partial ones
            while True:
                try:
                    os.write(descriptor, b"\0" * size)
                except OSError as error:
                    if error.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(descriptor)
    return filler


async def readiness(port: int) -> tuple[int, str]:
    return await http_get(port, "/readyz")


async def test_a_full_disk_while_connect_fails_delivers_everything_once_both_return(
    small_disk: Path, emulator: EmulatorServer, s3_server: EmbeddedS3, bucket: str
) -> None:
    settings = make_settings(emulator, s3_server, bucket, queue=spool_settings(small_disk / "spool"))
    await put_faults(emulator, error_rate=1.0)
    async with Gateway(settings, CREDENTIALS) as gateway:
        client = SmtpClient(gateway.smtp_port)
        assert gateway.http is not None
        http_port = gateway.http.port
        for number in range(5):
            code, _ = await client.send(mail(f"<disk-{number}@client.test>"))
            assert code == 250
        await wait_until(lambda: len(emulator.connect.calls) >= 5)  # every delivery failed and was deferred
        assert (await readiness(http_port))[0] == 200

        filler = fill(small_disk)
        big = make_mail(message_id="<disk-big@client.test>", text="x" * 400_000).as_bytes()
        code, reply = await client.send(big)
        assert code == 452, reply  # a condition that can clear: the sender's MTA keeps the mail and retries
        await wait_until(lambda: gateway.ready()[0] is False, seconds=10)
        status, reason = await readiness(http_port)
        assert status == 503 and "spool" in reason, reason

        filler.unlink()
        await put_faults(emulator, error_rate=0.0)
        await wait_until(lambda: len(contacts(emulator)) == 5, seconds=30)
        await wait_until(lambda: gateway.ready()[0], seconds=10)
        assert (await readiness(http_port))[0] == 200
        code, _ = await client.send(big)  # and new mail is taken again
        assert code == 250
        await wait_until(lambda: len(contacts(emulator)) == 6, seconds=30)

    delivered = sorted(
        c.request["EmailMessage"]["RawMessage"]["Headers"]["MESSAGE_ID"] for c in contacts(emulator)
    )
    assert delivered == sorted([f"<disk-{n}@client.test>" for n in range(5)] + ["<disk-big@client.test>"])
