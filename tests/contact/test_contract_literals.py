"""Literal cases copied from the contract document (../shared/reference/connect-email-contract.md).

Written by hand on purpose: the emulator and the request builder both read the botocore model, so a
misreading of the model would hide in both. These numbers come from the document, not from the model.
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.contact import contract


def request(**changes: Any) -> dict[str, Any]:
    raw = {"Subject": "s", "Body": "b", "ContentType": "text/plain"}
    raw.update(changes.pop("raw", {}))
    base: dict[str, Any] = {
        "InstanceId": "i",
        "FromEmailAddress": {"EmailAddress": "a@b.co"},
        "DestinationEmailAddress": "support@example.com",
        "EmailMessage": {"MessageSourceType": "RAW", "RawMessage": raw},
    }
    base.update(changes)
    return base


def refused(body: dict[str, Any]) -> bool:
    return bool(contract.violations(body))


def mailboxes(count: int) -> list[dict[str, str]]:
    return [{"EmailAddress": f"r{i}@example.com"} for i in range(count)]


def test_limits_match_the_document() -> None:
    limits = contract.limits()
    assert limits.subject_chars == 998
    assert limits.body_chars == 5_242_880
    assert limits.content_type_chars == 100
    assert limits.header_value_chars == 20_000
    assert limits.address_chars == 255
    assert limits.display_name_chars == 256
    assert limits.file_name_chars == 256
    assert limits.s3_url_chars == 2_000
    assert limits.attachments == 50  # botocore 1.43.117; 10 in 1.43.11
    assert limits.additional_recipients == 49
    assert limits.references_bytes == 4_096
    assert limits.attributes_bytes == 32_768
    assert set(limits.header_names) == {
        "REFERENCES",
        "MESSAGE_ID",
        "IN_REPLY_TO",
        "X_SES_SPAM_VERDICT",
        "X_SES_VIRUS_VERDICT",
    }


@pytest.mark.parametrize(
    ("body", "is_refused"),
    [
        (request(), False),
        (request(raw={"Subject": ""}), False),
        (request(raw={"Subject": "x" * 998}), False),
        (request(raw={"Subject": "x" * 999}), True),
        (request(raw={"Body": ""}), True),
        (request(raw={"Body": "x" * 5_242_880}), False),
        (request(raw={"Body": "x" * 5_242_881}), True),
        (request(raw={"ContentType": "text/html"}), False),
        (request(raw={"ContentType": "text/markdown"}), True),
        (request(raw={"Headers": {"MESSAGE_ID": "<a@b>"}}), False),
        (request(raw={"Headers": {"X_CUSTOM": "v"}}), True),
        (request(raw={"Headers": {"REFERENCES": "x" * 20_001}}), True),
        (request(FromEmailAddress={"EmailAddress": "a@localhost"}), True),
        (request(FromEmailAddress={"EmailAddress": "a b@c.de"}), True),
        (request(FromEmailAddress={"EmailAddress": "a" * 251 + "@b.co"}), True),
        (request(FromEmailAddress={"EmailAddress": "a@b.co", "DisplayName": "n" * 256}), False),
        (request(FromEmailAddress={"EmailAddress": "a@b.co", "DisplayName": "n" * 257}), True),
        (request(DestinationEmailAddress="not-an-address"), True),
        (request(AdditionalRecipients={"ToAddresses": []}), True),
        (request(AdditionalRecipients={"ToAddresses": mailboxes(49)}), False),
        (request(AdditionalRecipients={"ToAddresses": mailboxes(50)}), True),
        (request(AdditionalRecipients={"ToAddresses": mailboxes(25), "CcAddresses": mailboxes(25)}), True),
        (request(Attachments=[{"FileName": "a.pdf", "S3Url": "https://x/y"}] * 50), False),
        (request(Attachments=[{"FileName": "a.pdf", "S3Url": "https://x/y"}] * 51), True),
        (request(Attachments=[{"FileName": "bell\u0007.pdf", "S3Url": "https://x/y"}]), True),
        (request(Attachments=[{"FileName": "n" * 257, "S3Url": "https://x/y"}]), True),
        (request(Attachments=[{"FileName": "a.pdf", "S3Url": "https://x/" + "y" * 1991}]), True),
        (request(Attachments=[{"FileName": "a.pdf", "S3Url": "s3://bucket/key"}]), True),
        (request(References={"r": {"Type": "URL", "Value": "https://x"}}), False),
        (request(References={"r": {"Type": "EMAIL", "Value": "x"}}), True),
        (request(References={"r": {"Type": "STRING", "Value": "x" * 4_000}}), False),
        (
            request(
                References={
                    "r": {"Type": "STRING", "Value": "x" * 4_000},
                    "s": {"Type": "STRING", "Value": "x" * 200},
                }
            ),
            True,
        ),
        (request(Attributes={"a": "x" * 32_000}), False),
        (request(Attributes={"a": "x" * 30_000, "b": "x" * 3_000}), True),
        (request(ClientToken="t" * 500), False),
        (request(ClientToken="t" * 501), True),
        (request(InstanceId=""), True),
        (request(InstanceId="i" * 101), True),
        (
            request(
                EmailMessage={
                    "MessageSourceType": "HTML",
                    "RawMessage": {"Subject": "", "Body": "b", "ContentType": "text/plain"},
                }
            ),
            True,
        ),
        (request(Name="n" * 1_025), True),
        (request(Description="d" * 4_097), True),
        (request(ContactFlowId="f" * 501), True),
        (request(RelatedContactId=""), True),
        (request(Unknown="member"), True),
    ],
)
def test_literal_cases(body: dict[str, Any], is_refused: bool) -> None:
    assert refused(body) is is_refused, contract.violations(body)
