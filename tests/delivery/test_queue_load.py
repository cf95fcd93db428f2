"""Under a throttling, failing Connect: everything delivered exactly once.

The emulator throttles beyond N calls per second and fails a third of the calls (half of those failures
after the contact was made, so that only the ClientToken prevents a duplicate). Some mails go to a
destination Connect refuses: they end in the dead-letter area with their reason and a notification, and
``queue retry`` brings them back once the destination exists. (The governor's rate is proven on a virtual
clock in test_governor.py; the delivered rate end to end is a figure of benchmarks/queue_throughput.py.)
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from gateway.delivery.spool import MailState, Spool
from gateway.frontdoor.smtp import SmtpServer
from gateway.sandbox.emulator import EmulatorServer
from gateway.sandbox.s3server import EmbeddedS3
from gateway.service.gateway import Gateway
from gateway.settings import RouteSettings, Settings

from ..helpers import (
    CREDENTIALS,
    RecordingSink,
    SmtpClient,
    mail,
    make_settings,
    put_faults,
    retry_all_dead,
    spool_settings,
    wait_until,
)

RATE, BURST, THROTTLE_RPS = 12.0, 4, 8
GOOD, REFUSED = 40, 5


@pytest.fixture
def loaded(
    emulator: EmulatorServer,
    s3_server: EmbeddedS3,
    bucket: str,
    tmp_path: Path,
    smarthost: tuple[SmtpServer, RecordingSink],
) -> Settings:
    queue = spool_settings(
        tmp_path / "spool",
        rate_per_second=RATE,
        burst=BURST,
        workers=4,
        smarthost=("127.0.0.1", smarthost[0].port),
    )
    routes = (
        RouteSettings(match="support@example.com", instance_id="instance-1"),
        RouteSettings(match="refused@example.com", instance_id="instance-1"),
    )
    return make_settings(emulator, s3_server, bucket, routes=routes, queue=queue)


async def test_throttled_and_failing_connect(
    loaded: Settings, emulator: EmulatorServer, smarthost: tuple[SmtpServer, RecordingSink], tmp_path: Path
) -> None:
    emulator.connect.addresses = ("support@example.com",)
    await put_faults(emulator, throttle_rps=THROTTLE_RPS, error_rate=0.33)
    async with Gateway(loaded, CREDENTIALS) as gateway:
        client = SmtpClient(gateway.smtp_port)
        sends = [client.send(mail(f"<good-{n}@client.test>")) for n in range(GOOD)]
        sends += [
            client.send(mail(f"<refused-{n}@client.test>"), recipients=["refused@example.com"])
            for n in range(REFUSED)
        ]
        replies = await asyncio.gather(*sends)
        assert all(code == 250 for code, _ in replies)

        def per_message() -> Counter[str]:
            return Counter(
                c.request["EmailMessage"]["RawMessage"]["Headers"]["MESSAGE_ID"]
                for c in emulator.connect.contacts.values()
            )

        spool = Spool(loaded.queue.path, create=False)
        await wait_until(
            lambda: len(per_message()) == GOOD and spool.counts()[MailState.DEAD] == REFUSED, seconds=120
        )
        await wait_until(lambda: len(smarthost[1].mails) == REFUSED)
        statuses = Counter(c["Status"] for c in emulator.connect.calls)
        assert statuses[429] > 0 and statuses[500] > 0  # the faults really happened
        assert max(per_message().values()) == 1  # exactly once despite lost answers
        dead = spool.mails(MailState.DEAD)
        assert {m.message_id for m in dead} == {f"<refused-{n}@client.test>" for n in range(REFUSED)}
        assert all("not an email address of instance" in (m.last_error or "") for m in dead)
        assert {m.recipients for m in smarthost[1].mails} == {("customer@client.test",)}

        emulator.connect.addresses = ("support@example.com", "refused@example.com")
        out = await retry_all_dead(loaded.queue.path, tmp_path)
        assert out.startswith(f"{REFUSED} mail(s) queued again")
        await wait_until(lambda: len(per_message()) == GOOD + REFUSED, seconds=120)
    assert max(per_message().values()) == 1
    print(f"\n{len(emulator.connect.calls)} calls for {GOOD + REFUSED} mails: {dict(statuses)}")
