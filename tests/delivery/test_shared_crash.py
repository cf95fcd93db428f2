"""Three gateways, one shared queue: one is killed mid-delivery and the others finish its mail; together they
keep to one Connect budget.

Each gateway is a real process (``mail-gateway serve``) in sqs mode on the same stack of the template, in
moto; Connect is the emulator. Clients behave like an MTA with three MX hosts: each mail goes to the next
gateway until one answers 250. One gateway is SIGKILLed twice, each time while it holds a mail it is
delivering (its claim is in the table, and the emulator answers slowly), and restarted.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from gateway.sandbox.emulator import EmulatorServer

from ..helpers import put_faults, wait_until
from ..shared import GATEWAYS, delivered, gateways, mail_items, message, queue_depth, send_all

MAILS = 60


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
