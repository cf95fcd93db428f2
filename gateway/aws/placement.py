"""Where a route's contacts are made: its region, the role it is made under, and its endpoints.

A route inherits whatever it does not set from ``[aws]`` (and its bucket and prefix from
``[attachments]``). Routes with the same :class:`Placement` share one pair of clients
(:class:`~gateway.aws.clients.ClientPool`); routes in the same account and region share one
:class:`Quota`, because that is what Connect's StartEmailContact quota is counted against.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import NamedTuple

from gateway.settings import AttachmentSettings, AwsSettings, QuotaSettings, RouteSettings

__all__ = ["OWN_ACCOUNT", "Placement", "Quota", "placement", "quota_settings", "route_attachments"]

OWN_ACCOUNT = ""  # the account of the gateway's own credentials (routes without a role_arn)
_ARN_ACCOUNT = re.compile(r"arn:[^:]*:iam::(\d{12}):")


class Quota(NamedTuple):
    """What Connect counts its StartEmailContact quota against: an account in a region."""

    account: str
    region: str

    @property
    def label(self) -> str:
        """``eu-west-2`` for the gateway's own account, ``eu-west-2/123456789012`` for another."""
        return f"{self.region}/{self.account}" if self.account else self.region


@dataclass(frozen=True)
class Placement:
    region: str
    role_arn: str | None = None
    external_id: str | None = None
    connect_endpoint_url: str | None = None
    s3_endpoint_url: str | None = None
    sts_endpoint_url: str | None = None

    @property
    def account(self) -> str:
        """The role's account, or :data:`OWN_ACCOUNT` (no role: the credentials' own)."""
        found = _ARN_ACCOUNT.match(self.role_arn or "")
        return found[1] if found else OWN_ACCOUNT

    @property
    def quota(self) -> Quota:
        return Quota(self.account, self.region)

    @property
    def aws(self) -> AwsSettings:
        return AwsSettings(
            self.region, self.connect_endpoint_url, self.s3_endpoint_url, self.sts_endpoint_url
        )

    def describe(self) -> str:
        """For logs and ``check``: ``eu-west-2 as arn:aws:iam::...:role/x``."""
        return f"{self.region} as {self.role_arn}" if self.role_arn else self.region


def placement(route: RouteSettings, aws: AwsSettings) -> Placement:
    return Placement(
        region=route.region or aws.region,
        role_arn=route.role_arn,
        external_id=route.external_id,
        connect_endpoint_url=route.connect_endpoint_url or aws.connect_endpoint_url,
        s3_endpoint_url=route.s3_endpoint_url or aws.s3_endpoint_url,
        sts_endpoint_url=route.sts_endpoint_url or aws.sts_endpoint_url,
    )


def route_attachments(route: RouteSettings, attachments: AttachmentSettings) -> AttachmentSettings:
    """``[attachments]`` with the route's own bucket and prefix, when it sets them."""
    if route.bucket is None and route.prefix is None:
        return attachments
    return replace(
        attachments,
        bucket=route.bucket or attachments.bucket,
        prefix=attachments.prefix if route.prefix is None else route.prefix,
    )


def quota_settings(quota: Quota, quotas: tuple[QuotaSettings, ...]) -> QuotaSettings | None:
    """The ``[[quotas]]`` entry for an account and region: the one naming the account, else the region's."""
    regional = [q for q in quotas if q.region == quota.region]
    exact = [q for q in regional if q.account is not None and q.account == quota.account]
    anyone = [q for q in regional if q.account is None]
    found = exact or anyone
    return found[0] if found else None
