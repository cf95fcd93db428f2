"""``deploy/aws/cloudformation.yaml`` agrees with the gateway: what it creates is what sqs mode reads, and
its policy allows what the gateway calls.

The shared queue's tests run on stacks of this template deployed to moto's CloudFormation (each test's
``stack``: its Outputs configure the gateways). moto ignores some properties (the table's TTL, the bucket's
lifecycle and public access block), so those are read here from the template as CloudFormation reads it
(cfn-lint's decoder, which knows ``!Ref`` and friends); ``.ci/run`` lints it with cfn-lint as well.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore import xform_name

from gateway.aws.dynamodb import KEY, STATE_INDEX, TTL_ATTRIBUTE
from gateway.settings import AttachmentSettings, QueueSettings

from ..helpers import ROOT, unavailable
from ..shared import TEMPLATE

OUTPUTS = {"BucketName", "QueueUrl", "DeadLetterQueueUrl", "TableName"}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    try:
        from cfnlint.decode import decode_str
    except ImportError:
        unavailable("cfn-lint (the dev extra) is not installed")
    decoded, matches = decode_str(TEMPLATE.read_text())
    assert matches == [], [str(match) for match in matches]
    assert decoded is not None
    return dict(decoded)


def resource(template: dict[str, Any], resource_type: str) -> list[dict[str, Any]]:
    return [r["Properties"] for r in template["Resources"].values() if r["Type"] == resource_type]


def default(template: dict[str, Any], parameter: str) -> Any:
    return template["Parameters"][parameter]["Default"]


def test_every_parameter_has_a_default_and_the_outputs_are_the_gateways_keys(
    template: dict[str, Any],
) -> None:
    assert all("Default" in parameter for parameter in template["Parameters"].values())
    assert set(template["Outputs"]) >= OUTPUTS


def test_the_queues_keep_mail_past_max_age_and_dead_letters_longer(template: dict[str, Any]) -> None:
    queue = QueueSettings()
    assert int(default(template, "QueueRetentionSeconds")) >= queue.max_age
    [dead, work] = sorted(resource(template, "AWS::SQS::Queue"), key=lambda q: "RedrivePolicy" in q)
    assert dead["MessageRetentionPeriod"] > int(default(template, "QueueRetentionSeconds"))
    assert work["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    # a safety net for a message that crashes every gateway, never shorter than the gateway's own retries
    assert int(default(template, "MaxReceiveCount")) >= queue.max_attempts
    for encrypted in (dead, work):
        assert encrypted["SqsManagedSseEnabled"]["Fn::If"][2] is True  # SSE-SQS unless a KMS key is given


def test_the_table_is_what_the_gateway_reads(template: dict[str, Any]) -> None:
    [table] = resource(template, "AWS::DynamoDB::Table")
    assert table["KeySchema"] == [{"AttributeName": KEY, "KeyType": "HASH"}]
    assert [index["IndexName"] for index in table["GlobalSecondaryIndexes"]] == [STATE_INDEX]
    assert table["TimeToLiveSpecification"] == {"AttributeName": TTL_ATTRIBUTE, "Enabled": True}


def test_the_bucket_is_private_encrypted_and_forgets_what_is_left(template: dict[str, Any]) -> None:
    [bucket] = resource(template, "AWS::S3::Bucket")
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    rules = {rule["Prefix"]["Ref"]: rule for rule in bucket["LifecycleConfiguration"]["Rules"]}
    assert default(template, "QueuePrefix") == QueueSettings().prefix
    assert default(template, "AttachmentsPrefix") == AttachmentSettings("b").prefix
    assert rules["QueuePrefix"]["ExpirationInDays"] == {"Ref": "QueuedMailDays"}
    assert int(default(template, "QueuedMailDays")) * 86400 >= QueueSettings().max_age
    needed = QueueSettings().max_age + AttachmentSettings("b").url_expiry_seconds
    assert int(default(template, "AttachmentDays")) * 86400 >= needed


def operations(path: Path) -> set[str]:
    """The client methods a module of gateway/aws calls (``self._client.send_message(``)."""
    return set(re.findall(r"_client\.([a-z_]+)\(", path.read_text()))


def gateway_statements(template: dict[str, Any]) -> list[dict[str, Any]]:
    """The statements of the policy the gateways run with (not the KMS key's)."""
    [policy] = [
        p
        for p in resource(template, "AWS::IAM::ManagedPolicy")
        if p["ManagedPolicyName"]["Fn::Sub"].endswith("-gateway")
    ]
    return list(policy["PolicyDocument"]["Statement"])


def allowed(template: dict[str, Any], service: str) -> set[str]:
    """The ``service:`` actions the gateways' policy allows."""
    found = set()
    for statement in gateway_statements(template):
        listed = statement["Action"]
        for action in [listed] if isinstance(listed, str) else listed:
            if action.startswith(f"{service}:"):
                found.add(action.split(":", 1)[1])
    return found


@pytest.mark.parametrize(("service", "module"), [("sqs", "sqs.py"), ("dynamodb", "dynamodb.py")])
def test_the_policy_allows_what_the_gateway_calls_and_no_more(
    template: dict[str, Any], service: str, module: str
) -> None:
    model = botocore.session.get_session().get_service_model(service)
    by_method = {xform_name(name): name for name in model.operation_names}
    called = {by_method[method] for method in operations(ROOT / "gateway" / "aws" / module)}
    assert called == allowed(template, service)


def test_the_gateways_may_use_the_dead_letter_queue_too(template: dict[str, Any]) -> None:
    """They send the mail they give up to it; ``queue retry`` takes redriven messages out of it."""
    [queues] = [s["Resource"] for s in gateway_statements(template) if s["Sid"] == "WorkQueue"]
    assert {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]} in queues
    assert {"Fn::GetAtt": ["WorkQueue", "Arn"]} in queues
