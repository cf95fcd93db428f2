"""Where each route's contacts go: ``[aws]``'s region and endpoints, a route's own ``region``, ``role_arn``,
``bucket`` and endpoints, and ``[[quotas]]``, Connect's StartEmailContact quota per account and region.

The rules for endpoints, buckets and prefixes live here, once, for ``[aws]``, ``[attachments]`` and the
routes alike.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.config.table import Table
from gateway.errors import ConfigError
from gateway.settings import QueueSettings, QuotaSettings

__all__ = ["bucket_name", "endpoint_url", "key_prefix", "parse_quotas", "parse_route_placement", "region"]

MAX_PREFIX_CHARS = 200  # keeps presigned URLs far inside Connect's 2,000 characters
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d+")
_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::(\d{12}):role/[\w+=,.@/-]{1,512}")
_EXTERNAL_ID = re.compile(r"[\w+=,.@:/-]{2,1224}")
_ACCOUNT = re.compile(r"\d{12}")


def endpoint_url(value: str | None) -> str | None:
    if value is None or value.startswith(("http://", "https://")):
        return None
    return "must be an http:// or https:// URL (or empty)"


def bucket_name(value: str | None) -> str | None:
    if value is None:
        return "is required"
    ok = 3 <= len(value) <= 63 and value[0].isalnum() and value[-1].isalnum()
    ok = ok and all(c.islower() or c.isdigit() or c in ".-" for c in value)
    return None if ok else "is not a valid S3 bucket name (3-63 lower-case letters, digits, '.' and '-')"


def key_prefix(value: str | None) -> str | None:
    if value is None:
        return None
    if value.startswith("/"):
        return "must not start with '/'"
    if len(value) > MAX_PREFIX_CHARS:
        return f"must be at most {MAX_PREFIX_CHARS} characters, so that presigned URLs stay short"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return "must not contain control characters"
    return None


def region(value: str | None) -> str | None:
    if value is None or _REGION.fullmatch(value):
        return None
    return "must be an AWS region such as us-east-1 or eu-west-2"


def _role_arn(value: str | None) -> str | None:
    if value is None or _ROLE_ARN.fullmatch(value):
        return None
    return "must be an IAM role's ARN, such as arn:aws:iam::123456789012:role/mail-gateway"


def _external_id(value: str | None) -> str | None:
    if value is None or _EXTERNAL_ID.fullmatch(value):
        return None
    return "must be 2 to 1224 letters, digits and the characters +=,.@:/-"


def parse_route_placement(table: Table) -> dict[str, Any]:
    """A route's own region, role, bucket and endpoints, as keyword arguments of RouteSettings."""
    role_arn = table.check("role_arn", table.text("role_arn"), _role_arn)
    external_id = table.check("external_id", table.text("external_id"), _external_id)
    if external_id and not role_arn:
        raise table.error("external_id", "is only used with role_arn")
    bucket = table.text("bucket")
    if bucket is not None:
        table.check("bucket", bucket, bucket_name)
    prefix = table.get("prefix", str, "") if "prefix" in table.values else None
    return {
        "region": table.check("region", table.text("region"), region),
        "role_arn": role_arn,
        "external_id": external_id,
        "bucket": bucket,
        "prefix": table.check("prefix", prefix, key_prefix),
        **{
            key: table.check(key, table.text(key), endpoint_url)
            for key in ("connect_endpoint_url", "s3_endpoint_url", "sts_endpoint_url")
        },
    }


def parse_quotas(tables: list[Table], queue: QueueSettings) -> tuple[QuotaSettings, ...]:
    """``[[quotas]]``: rate and burst per region (and account); unset ones are ``[queue]``'s."""
    quotas: list[QuotaSettings] = []
    seen: dict[tuple[str, str | None], str] = {}
    for table in tables:
        where = table.check("region", table.text("region", required=True), region) or ""
        account = table.check(
            "account",
            table.text("account"),
            lambda v: None if v is None or _ACCOUNT.fullmatch(v) else "must be the 12 digits of an account",
        )
        if (where, account) in seen:
            raise ConfigError(f"{table.path}: the same region and account as {seen[where, account]}")
        seen[where, account] = table.path
        rate = table.get("rate_per_second", float, queue.rate_per_second)
        table.check("rate_per_second", rate, lambda v: None if v > 0 else "must be greater than 0")
        burst = table.get("burst", int, queue.burst)
        table.check("burst", burst, lambda v: None if v > 0 else "must be greater than 0")
        quotas.append(QuotaSettings(where, account, rate, burst))
        table.done()
    return tuple(quotas)
