"""Three gateways, one shared queue: one is killed mid-delivery and the others finish its mail; together they
keep to one Connect budget.

Each gateway is a real process (``mail-gateway serve``) in sqs mode on the same stack of the template, in
moto; Connect is the emulator. Clients behave like an MTA with three MX hosts: each mail goes to the next
gateway until one answers 250. One gateway is SIGKILLed twice, each time while it holds a mail it is
delivering (its claim is in the table, and the emulator answers slowly), and restarted.
"""

from __future__ import annotations

import asyncio
import os
import signal
import smtplib
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gateway.sandbox.emulator import EmulatorServer

from ..helpers import ROOT, free_port, make_mail, put_faults, wait_until
from ..shared import config_text, mail_items, queue_depth

MAILS = 60
CLIENTS = 6
GATEWAYS = 3


class GatewayProcess:
    def __init__(self, config: Path, port: int) -> None:
        self.config = config
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self.log = config.with_suffix(".log")

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve", "--config", str(self.config)],
                stdout=log, stderr=log, cwd=ROOT,
            )  # fmt: skip

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


@contextmanager
def gateways(
    tmp_path: Path, emulator: EmulatorServer, url: str, stack: dict[str, str], **queue: Any
) -> Iterator[list[GatewayProcess]]:
    started = []
    try:
        for number in range(GATEWAYS):
            port = free_port()
            text = config_text(port=port, emulator=emulator, url=url, outputs=stack, **queue)
            config = tmp_path / f"gateway-{number}.toml"
            config.write_text(text)
            process = GatewayProcess(config, port)
            process.start()
            started.append(process)
        yield started
    finally:
        codes = [process.stop() for process in started]
        assert codes == [0] * len(started), [p.log.read_text()[-3000:] for p in started]


def message(number: int) -> bytes:
    return make_mail(
        sender=f"customer{number}@client.test",
        subject=f"Mail number {number}",
        message_id=f"<shared-{number}@client.test>",
        text=f"body {number}",
        attachments=[(f"{number}.pdf", "application/pdf", os.urandom(256))],
    ).as_bytes()


def send_until_accepted(ports: Sequence[int], number: int, raw: bytes) -> int:
    """An MTA with three MX hosts: the next one after any failure, until a 250; how many tries."""
    tries = 0
    while True:
        port = ports[(number + tries) % len(ports)]
        tries += 1
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=15) as client:
                client.sendmail(f"customer{number}@client.test", ["support@example.com"], raw)
            return tries
        except smtplib.SMTPResponseException as error:
            if error.smtp_code >= 500:  # an MTA gives up on a 5xx: the gateway must never answer one here
                raise
            time.sleep(0.05)
        except (OSError, smtplib.SMTPException):
            time.sleep(0.05)


async def send_all(ports: Sequence[int], mails: dict[int, bytes], accepted: set[int]) -> None:
    pending = list(mails)

    async def client() -> None:
        while pending:
            number = pending.pop()
            await asyncio.to_thread(send_until_accepted, ports, number, mails[number])
            accepted.add(number)

    await asyncio.gather(*(client() for _ in range(CLIENTS)))


def delivered(emulator: EmulatorServer) -> Counter[str]:
    return Counter(
        c.request["EmailMessage"]["RawMessage"]["Headers"]["MESSAGE_ID"]
        for c in emulator.connect.contacts.values()
    )


def holding(url: str, table: str, pid: int) -> bool:
    """Whether the process ``pid`` holds a mail it is delivering right now."""
    return any(
        item["state"] == "active" and f"/{pid}/" in str(item.get("owner"))
        for item in mail_items(url, table).values()
    )


async def test_a_gateway_killed_mid_delivery_twice_loses_nothing_and_duplicates_nothing(
    emulator: EmulatorServer, aws_url: str, stack: dict[str, str], tmp_path: Path
) -> None:
    await put_faults(emulator, latency_ms=300)  # each contact takes a while: kills land mid-delivery
    mails = {number: message(number) for number in range(MAILS)}
    accepted: set[int] = set()
    with gateways(tmp_path, emulator, aws_url, stack, workers=4, rate_per_second=100, burst=20) as running:
        victim = running[0]
        ports = [process.port for process in running]
        sending = asyncio.ensure_future(send_all(ports, mails, accepted))
        kills = 0
        for _ in range(2):
            await wait_until(
                lambda: holding(aws_url, stack["TableName"], victim.pid), seconds=60, interval=0.25
            )
            victim.kill()
            kills += 1
            await asyncio.sleep(0.5)
            victim.start()
        await sending
        await wait_until(lambda: len(delivered(emulator)) == MAILS, seconds=120)
        await wait_until(lambda: queue_depth(aws_url, stack["QueueUrl"]) == 0, seconds=30)
    counts = delivered(emulator)
    assert accepted == set(mails)
    assert kills == 2
    assert set(counts) == {f"<shared-{n}@client.test>" for n in mails}  # none lost
    assert max(counts.values()) == 1  # none twice
    # A mail whose 250 the kill cut off was sent again, to another gateway: two items, one contact.
    states = Counter(item["state"] for item in mail_items(aws_url, stack["TableName"]).values())
    assert set(states) == {"done"}
    print(
        f"\n{MAILS} mails through {GATEWAYS} gateways, {kills} SIGKILLs, {len(emulator.connect.calls)} calls"
    )


async def test_three_gateways_keep_to_one_connect_budget(
    emulator: EmulatorServer, aws_url: str, stack: dict[str, str], tmp_path: Path
) -> None:
    rate = 8
    await put_faults(emulator, throttle_rps=rate)
    mails = {number: message(number) for number in range(MAILS)}
    accepted: set[int] = set()
    with gateways(tmp_path, emulator, aws_url, stack, workers=4, rate_per_second=rate, burst=2) as running:
        await send_all([process.port for process in running], mails, accepted)
        await wait_until(lambda: len(delivered(emulator)) == MAILS, seconds=120)
    throttled = [call for call in emulator.connect.calls if call["Status"] == 429]
    assert len(delivered(emulator)) == MAILS
    assert len(throttled) <= 3, f"{len(throttled)} calls throttled: the gateways overspent the shared budget"
    print(f"\n{MAILS} mails, {len(throttled)} throttled calls of {len(emulator.connect.calls)}")
