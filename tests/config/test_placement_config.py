"""``[[routes]]``' own region, role, bucket and endpoints, and ``[[quotas]]``: parsed, inherited, refused."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.aws.placement import Quota, placement, quota_settings, route_attachments

from .test_config import config, error_of, parse_config

ROLE = "arn:aws:iam::210987654321:role/mail-gateway"  # as in config.example.toml


def route(**keys: Any) -> dict[str, Any]:
    return {"match": "support@example.com", "instance_id": "i-1", **keys}


def test_a_route_places_itself_and_inherits_the_rest() -> None:
    settings = parse_config(
        config(
            aws={"region": "us-east-1", "connect_endpoint_url": "http://127.0.0.1:1"},
            routes=[
                route(region="eu-west-2", role_arn=ROLE, external_id="tenant-7", bucket="eu-bucket"),
                route(match="*@other.example", prefix="other/"),
            ],
        )
    )
    europe, home = settings.routes
    where = placement(europe, settings.aws)
    assert (where.region, where.role_arn, where.external_id) == ("eu-west-2", ROLE, "tenant-7")
    assert where.connect_endpoint_url == "http://127.0.0.1:1"  # inherited from [aws]
    assert where.quota == Quota("210987654321", "eu-west-2")
    assert route_attachments(europe, settings.attachments).bucket == "eu-bucket"
    assert route_attachments(europe, settings.attachments).prefix == "inbound/"
    assert placement(home, settings.aws).quota == Quota("", "us-east-1")
    assert route_attachments(home, settings.attachments).bucket == "my-bucket"
    assert route_attachments(home, settings.attachments).prefix == "other/"


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"region": "Europe"}, "routes[0].region: must be an AWS region"),
        ({"role_arn": "mail-gateway"}, "routes[0].role_arn: must be an IAM role's ARN"),
        ({"external_id": "tenant-7"}, "routes[0].external_id: is only used with role_arn"),
        ({"role_arn": ROLE, "external_id": "x"}, "routes[0].external_id: must be 2 to 1224"),
        ({"bucket": "Not_A_Bucket"}, "routes[0].bucket: is not a valid S3 bucket name"),
        ({"prefix": "/abs"}, "routes[0].prefix: must not start with '/'"),
        ({"sts_endpoint_url": "localhost:5000"}, "routes[0].sts_endpoint_url: must be an http://"),
    ],
)
def test_bad_placements_name_their_key(keys: dict[str, Any], expected: str) -> None:
    assert expected in error_of(config(routes=[route(**keys)]))


def test_quotas_default_to_the_queue_and_match_account_before_region() -> None:
    settings = parse_config(
        config(
            queue={"rate_per_second": 3, "burst": 6},
            quotas=[
                {"region": "eu-west-2", "rate_per_second": 10},
                {"region": "eu-west-2", "account": "210987654321", "burst": 20},
            ],
        )
    )
    anyone, tenant = settings.quotas
    assert (anyone.rate_per_second, anyone.burst, anyone.account) == (10.0, 6, None)
    assert (tenant.rate_per_second, tenant.burst) == (3.0, 20)
    assert quota_settings(Quota("210987654321", "eu-west-2"), settings.quotas) == tenant
    assert quota_settings(Quota("", "eu-west-2"), settings.quotas) == anyone
    assert quota_settings(Quota("", "us-east-1"), settings.quotas) is None


@pytest.mark.parametrize(
    ("quotas", "expected"),
    [
        ([{"rate_per_second": 1}], "quotas[0].region: is required"),
        ([{"region": "eu-west-2", "account": "12"}], "quotas[0].account: must be the 12 digits"),
        ([{"region": "eu-west-2", "burst": 0}], "quotas[0].burst: must be greater than 0"),
        ([{"region": "eu-west-2"}, {"region": "eu-west-2"}], "quotas[1]: the same region and account"),
        ([{"region": "eu-west-2", "rate": 1}], "quotas[0].rate: unknown key"),
    ],
)
def test_bad_quotas_name_their_key(quotas: list[dict[str, Any]], expected: str) -> None:
    assert expected in error_of(config(quotas=quotas))


def test_the_examples_commented_placement_and_quotas_parse() -> None:
    """config.example.toml's commented route placement and [[quotas]], uncommented, mean what it says."""
    import tomllib

    from ..helpers import ROOT

    text = (ROOT / "config.example.toml").read_text()
    lines = text.splitlines()
    start = lines.index('# region = "eu-west-2"')
    end = lines.index('# sts_endpoint_url = ""', start)
    placed = "\n".join(line.removeprefix("# ").split("  #")[0] for line in lines[start : end + 1])
    quotas = "\n".join(
        line.removeprefix("# ") for line in lines[lines.index("# [[quotas]]") :] if line.startswith("# ")
    )
    document = tomllib.loads(text.replace(lines[start], placed, 1) + "\n" + quotas)
    settings = parse_config(document)
    route = settings.routes[0]
    assert (route.region, route.role_arn, route.external_id) == ("eu-west-2", ROLE, "tenant-7")
    assert placement(route, settings.aws).quota == Quota("210987654321", "eu-west-2")
    assert [(q.account, q.rate_per_second, q.burst) for q in settings.quotas] == [
        (None, 5.0, 10),
        ("210987654321", 2.0, 5),
    ]


SQS = {"mode": "sqs", "queue_url": "https://sqs.us-east-1.amazonaws.com/111122223333/q", "table": "state"}


def test_sqs_mode_takes_placed_routes_and_quotas_but_keeps_raw_mail_apart_from_their_prefixes() -> None:
    """The shared queue's raw mail lives under [queue] prefix in [attachments] bucket: a route whose own
    prefix in that bucket overlaps it is refused, naming the route; a route with its own bucket is not."""
    placed = [
        route(region="eu-west-2", role_arn=ROLE, prefix="queue/eu/", bucket="eu-bucket"),
        route(match="*@other.example", prefix="other/"),
    ]
    settings = parse_config(config(queue=SQS, routes=placed, quotas=[{"region": "eu-west-2"}]))
    assert settings.routes[0].region == "eu-west-2" and settings.quotas[0].region == "eu-west-2"
    overlapping = [*placed, route(match="*@third.example", prefix="queue/mail/")]
    assert "queue.prefix: 'queue/' overlaps routes[2].prefix 'queue/mail/' in bucket my-bucket" in error_of(
        config(queue=SQS, routes=overlapping)
    )
    assert "overlaps routes[0].prefix" in error_of(
        config(queue=SQS, routes=[route(prefix="", bucket="my-bucket")])
    )
    assert parse_config(config(routes=overlapping)).queue.mode == "spool"  # no shared queue: no matter
