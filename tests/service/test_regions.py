"""Routes in two regions under two roles: each contact is made in its route's region, signed with the
credentials of its route's role (assumed through moto's STS), and its attachments go to its bucket.

The emulator records the region and access key of each call's SigV4 credential scope; moto's STS knows
which role each access key it handed out belongs to. Together they prove where each contact went.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.sandbox.emulator import EmulatorServer
from gateway.sandbox.emulator.faults import Faults
from gateway.sandbox.s3server import EmbeddedS3
from gateway.service.gateway import Gateway
from gateway.settings import AwsSettings, QueueMode, QueueSettings, RouteSettings, Settings

from ..helpers import CREDENTIALS, Clock, SmtpClient, make_mail, make_settings, wait_until

ROLE_A = "arn:aws:iam::111111111111:role/route-a"
ROLE_B = "arn:aws:iam::222222222222:role/route-b"


def assumed_role(account: str, access_key: str) -> tuple[str, str]:
    """The role (and external id) moto's STS handed ``access_key`` out for."""
    from moto.sts.models import sts_backends

    role = sts_backends[account]["aws"].get_assumed_role_from_access_key(access_key)
    assert role is not None, f"{access_key} is no assumed role's key in account {account}"
    return role.role_arn, role.external_id


@pytest.fixture
def regional(emulator: EmulatorServer, s3_server: EmbeddedS3, bucket: str) -> Settings:
    other_bucket = f"test-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(other_bucket)
    base = make_settings(
        emulator,
        s3_server,
        bucket,
        routes=(
            RouteSettings(
                match="support@example.com",
                instance_id="instance-eu",
                region="eu-west-2",
                role_arn=ROLE_A,
                external_id="tenant-a",
            ),
            RouteSettings(
                match="sales@example.com",
                instance_id="instance-ap",
                region="ap-southeast-2",
                role_arn=ROLE_B,
                bucket=other_bucket,
                prefix="sales/",
            ),
            RouteSettings(match="*@example.com", instance_id="instance-home"),
        ),
    )
    aws = AwsSettings(
        region="us-east-1",
        connect_endpoint_url=emulator.url,
        s3_endpoint_url=s3_server.url,
        sts_endpoint_url=s3_server.url,  # the embedded moto server answers STS too
    )
    return replace(base, aws=aws)


@pytest.fixture
async def regional_gateway(regional: Settings) -> AsyncIterator[Gateway]:
    async with Gateway(regional, CREDENTIALS) as running:
        yield running


async def test_each_route_contacts_its_region_under_its_role(
    regional: Settings, regional_gateway: Gateway, emulator: EmulatorServer, s3_server: EmbeddedS3
) -> None:
    smtp = SmtpClient(regional_gateway.smtp_port)
    pdf = ("terms.pdf", "application/pdf", b"%PDF-1.4 terms")
    for to in ("support@example.com", "sales@example.com", "info@example.com"):
        code, reply = await smtp.send(make_mail(to=to, attachments=[pdf]).as_bytes(), recipients=[to])
        assert code == 250, reply

    contacts = {c.request["DestinationEmailAddress"]: c for c in emulator.connect.contacts.values()}
    europe, asia = contacts["support@example.com"], contacts["sales@example.com"]
    home = contacts["info@example.com"]
    assert (europe.signer["Region"], asia.signer["Region"], home.signer["Region"]) == (
        "eu-west-2",
        "ap-southeast-2",
        "us-east-1",
    )
    assert home.signer["AccessKeyId"] == CREDENTIALS.access_key_id  # no role: the gateway's own key
    assert assumed_role("111111111111", europe.signer["AccessKeyId"]) == (ROLE_A, "tenant-a")
    assert assumed_role("222222222222", asia.signer["AccessKeyId"])[0] == ROLE_B

    # The attachments went to each route's bucket and prefix, and Connect could fetch them.
    sales_bucket = regional.routes[1].bucket
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=sales_bucket)["Contents"]]
    assert keys and all(key.startswith("sales/") for key in keys)
    assert f"/{sales_bucket}/sales/" in asia.request["Attachments"][0]["S3Url"]
    assert f"/{regional.attachments.bucket}/inbound/" in europe.request["Attachments"][0]["S3Url"]
    await wait_until(lambda: all(c.attachments[0].fetched for c in (europe, asia, home)))


async def test_clients_of_placements_no_route_uses_are_closed_once_idle(regional: Settings) -> None:
    """A reload that drops routes lets their clients go, but not while a delivery may still use them."""
    from gateway.aws.clients import IDLE_CLOSE_SECONDS, ClientPool
    from gateway.aws.placement import placement
    from gateway.service.places import placements

    clock = Clock()
    pool = ClientPool(CREDENTIALS, clock=clock)
    try:
        for route in regional.routes:
            await pool.clients(placement(route, regional.aws))
        assert len(pool.placements) == 3
        only_home = replace(regional, routes=regional.routes[2:])
        await pool.retain(placements(only_home))
        assert len(pool.placements) == 3  # just used: kept a while
        clock.now += IDLE_CLOSE_SECONDS
        await pool.clients(placement(regional.routes[2], regional.aws))
        assert pool.placements == placements(only_home)
    finally:
        await pool.close()


async def test_a_throttled_region_does_not_slow_the_other(
    emulator: EmulatorServer, s3_server: EmbeddedS3, bucket: str, tmp_path: Path
) -> None:
    """Connect throttles eu-west-2 hard (one call in ten seconds); the mail for ap-southeast-2, queued
    behind forty for eu-west-2, is all delivered before eu-west-2 gets more than a couple through, and
    only eu-west-2's governor slowed down. (Workers waiting their turn at eu-west-2's governor would
    hold ap-southeast-2's mail behind minutes of eu-west-2's.)"""
    emulator.faults.faults = Faults(throttle_rps=0.1, throttle_region="eu-west-2")
    settings = make_settings(
        emulator,
        s3_server,
        bucket,
        routes=(
            RouteSettings(match="*@eu.example.com", instance_id="instance-eu", region="eu-west-2"),
            RouteSettings(match="*@ap.example.com", instance_id="instance-ap", region="ap-southeast-2"),
        ),
        queue=QueueSettings(
            mode=QueueMode.SPOOL, path=tmp_path / "spool", rate_per_second=2.0, burst=2, shutdown_grace=1.0
        ),
    )
    busy, quiet = [f"{n}@eu.example.com" for n in range(40)], [f"{n}@ap.example.com" for n in range(4)]
    async with Gateway(settings, CREDENTIALS) as gateway:
        smtp = SmtpClient(gateway.smtp_port)
        for to in busy + quiet:
            code, reply = await smtp.send(make_mail(to=to).as_bytes(), recipients=[to])
            assert code == 250, reply

        def made(region: str) -> int:
            return sum(1 for c in emulator.connect.contacts.values() if c.signer["Region"] == region)

        await wait_until(lambda: made("ap-southeast-2") == len(quiet), seconds=30)
        assert made("eu-west-2") <= 2  # eu-west-2's mail is still waiting
        rates = {quota.region: governor for quota, governor in gateway.governors.quotas.items()}
        assert rates["eu-west-2"].rate < rates["eu-west-2"].configured_rate
        assert rates["ap-southeast-2"].rate == rates["ap-southeast-2"].configured_rate
        refused = [c for c in emulator.connect.calls if c["Error"] == "ThrottlingException"]
        assert refused and {c["Region"] for c in refused} == {"eu-west-2"}
        sample = gateway.metrics.registry.get_sample_value
        throttled = "mail_gateway_connect_throttled_total"
        assert sample(throttled, {"region": "eu-west-2", "account": ""}) == len(refused)
        assert not sample(throttled, {"region": "ap-southeast-2", "account": ""})


async def test_role_credentials_are_assumed_again_before_they_expire(
    emulator: EmulatorServer, s3_server: EmbeddedS3
) -> None:
    """aiobotocore refreshes a role's credentials from 15 minutes before they expire: credentials of an
    hour serve many calls with one AssumeRole; credentials of 15 minutes (always inside that window) are
    assumed again before every call, never used stale."""
    from moto.sts.models import sts_backends

    from gateway.aws.clients import AwsClients, role_session
    from gateway.aws.placement import Placement

    role = "arn:aws:iam::333333333333:role/refreshed"
    where = Placement("eu-west-2", role, None, emulator.url, s3_server.url, s3_server.url)
    assumed = sts_backends["333333333333"]["aws"].assumed_roles

    async def assume_roles_for_three_calls(duration: int) -> int:
        before = len(assumed)
        session = await role_session(where, CREDENTIALS, duration)
        async with AwsClients(where.aws, session=session) as aws:
            for _ in range(3):
                await aws.connect.describe_instance(InstanceId="instance-eu")
        return len(assumed) - before

    assert await assume_roles_for_three_calls(3600) == 1
    assert await assume_roles_for_three_calls(900) == 3
    keys = {call["AccessKeyId"] for call in emulator.connect.calls if call["Operation"] == "DescribeInstance"}
    assert len(keys) == 4 and {a.access_key_id for a in assumed[-4:]} == keys  # each call signed fresh


async def test_a_reload_moves_new_deliveries_to_the_new_region(
    regional: Settings, regional_gateway: Gateway, emulator: EmulatorServer
) -> None:
    """After a reload that moves a route to another region (under no role), its next contact is made
    there and signed with the gateway's own key; the quota of that region gets a governor of its own."""
    smtp = SmtpClient(regional_gateway.smtp_port)
    raw = make_mail(to="support@example.com").as_bytes()
    assert (await smtp.send(raw))[0] == 250
    moved = replace(regional.routes[0], region="ca-central-1", role_arn=None, external_id=None)
    await regional_gateway.reload(replace(regional, routes=(moved, *regional.routes[1:])))
    assert (await smtp.send(make_mail(to="support@example.com", subject="after").as_bytes()))[0] == 250
    regions = [c.signer["Region"] for c in emulator.connect.contacts.values()]
    assert regions == ["eu-west-2", "ca-central-1"]
    last = list(emulator.connect.contacts.values())[-1]
    assert last.signer["AccessKeyId"] == CREDENTIALS.access_key_id
