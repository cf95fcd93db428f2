"""sqs mode with routes in several regions: the shared queue stays the gateway's own (``[aws]``'s region
and credentials), each route's contacts go to its region, and the Connect budget every gateway shares is
one DynamoDB item per quota (account and region), each throttled and halved alone."""

from __future__ import annotations

from dataclasses import replace

from gateway.aws.answers import Answers
from gateway.aws.clients import AwsClients
from gateway.aws.dynamodb import Table
from gateway.aws.placement import Quota
from gateway.delivery.governor import Governors
from gateway.delivery.shared.pacer import pacer_key, shared_budgets
from gateway.sandbox.emulator import EmulatorServer
from gateway.sandbox.emulator.faults import Faults
from gateway.service.gateway import Gateway
from gateway.settings import QueueSettings, QuotaSettings, RouteSettings

from ..helpers import CREDENTIALS, SmtpClient, make_mail, wait_until
from ..shared import REGION, client, mail_items, shared_settings

EUROPE = QuotaSettings("eu-west-2", rate_per_second=8.0, burst=2)


def pacer_items(url: str, table: str) -> dict[str, dict[str, str]]:
    """The shared budgets' items, by key, as DynamoDB holds them."""
    items = client(url, "dynamodb").scan(TableName=table)["Items"]
    return {
        item["pk"]["S"]: {name: next(iter(value.values())) for name, value in item.items()}
        for item in items
        if item["pk"]["S"].startswith("pacer#")
    }


async def test_each_quota_is_a_bucket_of_its_own_that_every_gateway_shares(
    emulator: EmulatorServer, aws_url: str, stack: dict[str, str]
) -> None:
    aws = shared_settings(emulator, aws_url, stack).aws
    queue = QueueSettings(rate_per_second=0.5, burst=2)
    async with AwsClients(aws, CREDENTIALS, shared_queue=True) as clients:
        table = Table(clients.dynamodb, stack["TableName"], Answers())
        one, other = (Governors(queue, (EUROPE,), budget=shared_budgets(table)) for _ in range(2))
        home, europe = Quota("", REGION), Quota("", "eu-west-2")
        for _ in range(2):  # home's burst, spent by one gateway
            await one(home).acquire()
        assert one(home).wait() > 0
        assert one(europe).wait() == 0  # another region's quota is untouched
        await other(europe).acquire()
        assert other(europe).governor.configured_rate == 8.0  # [[quotas]]'s, not [queue]'s
        keys = set(pacer_items(aws_url, stack["TableName"]))
        assert (
            keys
            == {pacer_key(home), pacer_key(europe)}
            == {
                "pacer#connect#us-east-1",
                "pacer#connect#eu-west-2",
            }
        )
        assert pacer_key(Quota("210987654321", "eu-west-2")) == "pacer#connect#eu-west-2#210987654321"
        # The other gateway's permit for home comes after the two the first one took, one interval
        # (two seconds at 0.5/s) later: the same bucket, not one of its own (that would start at now).
        spent = float(pacer_items(aws_url, stack["TableName"])[pacer_key(home)]["tat"])
        await other(home).acquire()
        assert float(pacer_items(aws_url, stack["TableName"])[pacer_key(home)]["tat"]) == spent + 2.0
        await one.close()
        await other.close()


async def test_routes_in_two_regions_deliver_through_the_shared_queue_paced_per_quota(
    emulator: EmulatorServer, aws_url: str, stack: dict[str, str]
) -> None:
    """Connect throttles eu-west-2 only: its shared bucket is halved for every gateway, the home region's
    is not, each contact is signed for its route's region, and eu-west-2's mail gets through in the end."""
    emulator.faults.faults = Faults(throttle_rps=0.5, throttle_region="eu-west-2")
    routes = (
        RouteSettings(match="*@eu.example.com", instance_id="instance-eu", region="eu-west-2"),
        RouteSettings(match="support@example.com", instance_id="instance-1"),
    )
    settings = replace(shared_settings(emulator, aws_url, stack, routes=routes), quotas=(EUROPE,))
    europe = [f"{n}@eu.example.com" for n in range(6)]
    async with Gateway(settings, CREDENTIALS) as gateway:
        smtp = SmtpClient(gateway.smtp_port)
        for to in [*europe, "support@example.com"]:
            code, reply = await smtp.send(make_mail(to=to).as_bytes(), recipients=[to])
            assert code == 250, reply

        def throttled() -> list[dict[str, str]]:
            return [c for c in emulator.connect.calls if c["Error"] == "ThrottlingException"]

        def europe_rate() -> float:
            item = pacer_items(aws_url, stack["TableName"]).get("pacer#connect#eu-west-2", {})
            return float(item.get("rate", EUROPE.rate_per_second))

        await wait_until(lambda: bool(throttled()), seconds=30)
        await wait_until(lambda: europe_rate() < EUROPE.rate_per_second, seconds=10)  # halved for all
        emulator.faults.faults = Faults()
        await wait_until(lambda: len(emulator.connect.contacts) == len(europe) + 1, seconds=60)
        await wait_until(
            lambda: all(i["state"] == "done" for i in mail_items(aws_url, stack["TableName"]).values()),
            seconds=30,
        )
    items = pacer_items(aws_url, stack["TableName"])
    assert "rate" not in items["pacer#connect#us-east-1"]  # never throttled: never lowered
    assert {c["Region"] for c in throttled()} == {"eu-west-2"}
    regions = {
        c.request["DestinationEmailAddress"]: c.signer["Region"] for c in emulator.connect.contacts.values()
    }
    assert regions == {**dict.fromkeys(europe, "eu-west-2"), "support@example.com": REGION}
    sample = gateway.metrics.registry.get_sample_value
    assert sample("mail_gateway_connect_throttled_total", {"region": "eu-west-2", "account": ""}) == len(
        throttled()
    )
