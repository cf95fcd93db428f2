"""Killed at any instant, the gateway loses no mail and makes no second contact.

The gateway runs as a real process (spool mode) against the emulator and the embedded S3. Several hundred
mails are sent by clients that behave like MTAs (they resend the same bytes until they get a 250) while the
gateway is killed with SIGKILL at random moments and restarted on the same spool. At the end every mail
has exactly one contact in the emulator.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import aiohttp

from gateway.delivery.spool import MailState, Spool
from gateway.sandbox.emulator import EmulatorServer
from gateway.sandbox.s3server import EmbeddedS3

from ..helpers import ROOT, free_port, http_get, numbered_mail, send_until_accepted, wait_until

MAILS = 300
CLIENTS = 6


def write_config(
    path: Path, port: int, http_port: int, emulator: EmulatorServer, s3: EmbeddedS3, bucket: str
) -> Path:
    config = path / "gateway.toml"
    config.write_text(
        f"""
[smtp]
listen = "127.0.0.1:{port}"
hostname = "mx.crash.test"
[aws]
connect_endpoint_url = "{emulator.url}"
s3_endpoint_url = "{s3.url}"
[attachments]
bucket = "{bucket}"
[queue]
path = "{path / "spool"}"
rate_per_second = 500
burst = 50
workers = 4
retry_initial = "50ms"
retry_max = "500ms"
min_free_disk = 0
shutdown_grace = "2s"
[http]
listen = "127.0.0.1:{http_port}"
[limits]
max_mails_per_client_per_minute = 100000
[[routes]]
match = "support@example.com"
instance_id = "crash-instance"
"""
    )
    return config


def message(number: int) -> bytes:
    return numbered_mail(number, "crash", attachment_bytes=512)


async def ready(http_port: int) -> None:
    """Until /readyz says the gateway has started (listener, spool, workers): its working life begins."""

    last = "no answer"
    for _ in range(1200):
        try:
            status, last = await http_get(http_port, "/readyz")
        except aiohttp.ClientError as error:
            status, last = 0, str(error)
        if status == 200:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the gateway did not come back: {last}")


class GatewayProcess:
    def __init__(self, config: Path, environment: dict[str, str]) -> None:
        self.config = config
        self.environment = environment
        self.process: subprocess.Popen[bytes] | None = None
        self.log = config.parent / "gateway.log"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve", "--config", str(self.config)],
                stdout=log, stderr=log, env=self.environment, cwd=ROOT,
            )  # fmt: skip

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def terminate(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


async def test_sigkill_at_random_moments_loses_nothing_and_duplicates_nothing(
    emulator: EmulatorServer, s3_server: EmbeddedS3, bucket: str, tmp_path: Path
) -> None:
    port, http_port = free_port(), free_port()
    config = write_config(tmp_path, port, http_port, emulator, s3_server, bucket)
    # A SIGKILLed process never writes its coverage data, so measuring these children would only slow them.
    environment = {key: value for key, value in os.environ.items() if key != "COVERAGE_PROCESS_CONFIG"}
    environment |= {"AWS_ACCESS_KEY_ID": "crash", "AWS_SECRET_ACCESS_KEY": "crash"}
    gateway = GatewayProcess(config, environment)
    gateway.start()
    mails = {number: message(number) for number in range(MAILS)}
    accepted: set[int] = set()
    resent = 0
    pending = list(mails)
    stop = threading.Event()  # a failure ends the clients' threads too, so that the run does not hang

    async def client() -> None:
        nonlocal resent
        while pending:
            number = pending.pop()
            tries = await asyncio.to_thread(send_until_accepted, [port], number, mails[number], 10, stop)
            resent += tries > 1
            accepted.add(number)

    async def killer() -> int:
        kills = 0
        rng = random.Random(20261127)
        while len(accepted) < MAILS:
            await ready(http_port)  # a random moment of its working life, not of its start-up
            await asyncio.sleep(rng.uniform(0.05, 0.5))
            if len(accepted) == MAILS:
                break
            gateway.kill()
            kills += 1
            gateway.start()
        return kills

    try:
        kills, *_ = await asyncio.gather(killer(), *(client() for _ in range(CLIENTS)))
    except BaseException:
        gateway.kill()
        raise
    finally:
        stop.set()
    assert kills is not None
    assert kills >= 3, "the gateway was not killed often enough for the test to mean anything"
    assert accepted == set(mails)

    def delivered() -> Counter[str]:
        return Counter(
            c.request["EmailMessage"]["RawMessage"]["Headers"]["MESSAGE_ID"]
            for c in emulator.connect.contacts.values()
        )

    # A mail sent again after a kill took its 250 is a second row whose contact already exists (the same
    # ClientToken): the contacts can all be there while such a row still waits for its worker.
    spool = Spool(tmp_path / "spool", create=False)

    def unfinished() -> int:
        left = spool.counts()
        return left[MailState.QUEUED] + left[MailState.ACTIVE] + left[MailState.DEFERRED]

    await wait_until(lambda: len(delivered()) == MAILS and unfinished() == 0, seconds=120)
    assert gateway.terminate() == 0
    counts = delivered()
    assert set(counts) == {f"<crash-{n}@client.test>" for n in mails}  # none lost
    assert max(counts.values()) == 1  # none twice
    left = spool.counts()
    assert left[MailState.QUEUED] == left[MailState.ACTIVE] == left[MailState.DEFERRED] == 0
    assert left[MailState.DEAD] == 0
    calls = len(emulator.connect.calls)
    print(f"\n{MAILS} mails ({resent} resent by clients), {kills} SIGKILLs, {calls} calls to Connect, {left}")
