"""A parsed mail to a StartEmailContact request: every field, every limit, always valid."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from gateway import contract
from gateway.config import RouteSettings
from gateway.mime import Mailbox, ParsedMail, parse_mail
from gateway.request import (
    EMPTY_BODY,
    FALLBACK_SENDER,
    TRUNCATION_NOTE,
    StoredFile,
    attachment_names,
    build_request,
    client_token,
)
from gateway.routing import TAG_ATTRIBUTE, Target

ROUTE = RouteSettings(match="support@example.com", instance_id="instance-1")
TARGET = Target(ROUTE, "support@example.com")
RAW = b"raw bytes of the mail"


def build(mail: ParsedMail, target: Target = TARGET, **options: object) -> dict[str, object]:
    request = build_request(mail, target, RAW, **options)  # type: ignore[arg-type]
    assert contract.violations(request) == []
    return request


def test_a_complete_mail() -> None:
    message = EmailMessage()
    message["From"] = "Zoë <zoe@client.test>"
    message["To"] = "support@example.com, other@example.org"
    message["Cc"] = "cc@example.net"
    message["Bcc"] = "hidden@example.net"
    message["Subject"] = "Help\twith  order"
    message["Message-ID"] = "<m1@client.test>"
    message["In-Reply-To"] = "<m0@example.com>"
    message["References"] = "<m0@example.com>"
    message.set_content("text")
    message.add_alternative("<b>html</b>", subtype="html")
    files = [StoredFile("a.pdf", "https://bucket.s3.amazonaws.com/k/1")]
    request = build(parse_mail(message.as_bytes()), files=files)
    assert request == {
        "InstanceId": "instance-1",
        "FromEmailAddress": {"EmailAddress": "zoe@client.test", "DisplayName": "Zoë"},
        "DestinationEmailAddress": "support@example.com",
        "EmailMessage": {
            "MessageSourceType": "RAW",
            "RawMessage": {
                "Subject": "Help with order",
                "Body": "<b>html</b>\n",
                "ContentType": "text/html",
                "Headers": {
                    "MESSAGE_ID": "<m1@client.test>",
                    "IN_REPLY_TO": "<m0@example.com>",
                    "REFERENCES": "<m0@example.com>",
                },
            },
        },
        "ClientToken": client_token(RAW, TARGET),
        "AdditionalRecipients": {
            "ToAddresses": [{"EmailAddress": "other@example.org"}],
            "CcAddresses": [{"EmailAddress": "cc@example.net"}],
        },
        "Attachments": [{"FileName": "a.pdf", "S3Url": "https://bucket.s3.amazonaws.com/k/1"}],
    }


def test_route_settings_and_tag_reach_the_request() -> None:
    route = RouteSettings(
        match="support@example.com",
        instance_id="i",
        contact_flow_id="flow",
        attributes={"team": "billing"},
        segment_attributes={"connect:Subtype": {"ValueString": "connect:Email"}},
        references={"Portal": {"Type": "URL", "Value": "https://p.example.com"}},
        name="Inbound",
        description="From SMTP",
    )
    request = build(ParsedMail(text_body="hi"), Target(route, "support@example.com", tag="vip"))
    assert request["ContactFlowId"] == "flow"
    assert request["Attributes"] == {"team": "billing", TAG_ATTRIBUTE: "vip"}
    assert request["SegmentAttributes"] == {"connect:Subtype": {"ValueString": "connect:Email"}}
    assert request["References"] == {"Portal": {"Type": "URL", "Value": "https://p.example.com"}}
    assert (request["Name"], request["Description"]) == ("Inbound", "From SMTP")


def test_related_contact_comes_only_from_the_route_header() -> None:
    mail = ParsedMail(text_body="x", headers=(("X-Related", " 1234-abcd "),))
    trusting = RouteSettings(match="*", instance_id="i", related_contact_header="x-related")
    assert build(mail, Target(trusting, "a@b.co"))["RelatedContactId"] == "1234-abcd"
    assert "RelatedContactId" not in build(mail)
    spoofed = ParsedMail(text_body="x", headers=(("X-Related", "a b\x00"),))
    assert "RelatedContactId" not in build(spoofed, Target(trusting, "a@b.co"))


def test_sender_falls_back_to_envelope_then_placeholder() -> None:
    bad_from = ParsedMail(sender=Mailbox("root@localhost", "Root"), text_body="x")
    assert build(bad_from, envelope_sender="bounce@client.test")["FromEmailAddress"] == {
        "EmailAddress": "bounce@client.test",
        "DisplayName": "Root",
    }
    assert build(ParsedMail(text_body="x"), envelope_sender="")["FromEmailAddress"] == {
        "EmailAddress": FALLBACK_SENDER
    }


@pytest.mark.parametrize(
    ("mail", "body", "content_type"),
    [
        (ParsedMail(text_body="t", html_body="<p>h</p>"), "<p>h</p>", "text/html"),
        (ParsedMail(text_body="t", html_body="  "), "t", "text/plain"),
        (ParsedMail(), EMPTY_BODY, "text/plain"),
        (ParsedMail(text_body="\n"), EMPTY_BODY, "text/plain"),
    ],
)
def test_body_choice(mail: ParsedMail, body: str, content_type: str) -> None:
    raw = build(mail)["EmailMessage"]["RawMessage"]  # type: ignore[index]
    assert (raw["Body"], raw["ContentType"]) == (body, content_type)


def test_long_body_is_cut_at_a_character_boundary_with_a_note() -> None:
    body = "ü" * (3 * 1024 * 1024)  # 6 MiB of UTF-8
    result = build(ParsedMail(text_body=body))["EmailMessage"]["RawMessage"]["Body"]  # type: ignore[index]
    assert result.endswith(TRUNCATION_NOTE)
    assert len(result.encode("utf-8")) <= contract.BODY_MAX_BYTES
    assert set(result[: -len(TRUNCATION_NOTE)]) == {"ü"}


def test_subject_is_one_line_within_998_characters() -> None:
    raw = build(ParsedMail(subject="a\r\nb\x00c" + "x" * 2000))["EmailMessage"]["RawMessage"]  # type: ignore[index]
    assert raw["Subject"].startswith("a b c")
    assert len(raw["Subject"]) == 998


def test_recipients_exclude_destination_and_stay_within_49() -> None:
    to = tuple(Mailbox(f"to{i}@example.org") for i in range(45)) + (Mailbox("SUPPORT@example.com"),)
    cc = tuple(Mailbox(f"cc{i}@example.org") for i in range(10)) + (Mailbox("to1@example.org"),)
    recipients = build(ParsedMail(to=to, cc=cc))["AdditionalRecipients"]
    assert isinstance(recipients, dict)
    addresses = [m["EmailAddress"] for m in recipients["ToAddresses"] + recipients["CcAddresses"]]
    assert len(addresses) == 49 == len(set(addresses))
    assert "SUPPORT@example.com" not in addresses
    assert len(recipients["ToAddresses"]) == 45


def test_references_keep_the_most_recent_ids() -> None:
    ids = tuple(f"<{i:05d}-{'x' * 80}@example.com>" for i in range(400))
    headers = build(ParsedMail(references=ids))["EmailMessage"]["RawMessage"]["Headers"]  # type: ignore[index]
    kept = headers["REFERENCES"].split(" ")
    assert len(headers["REFERENCES"]) <= 20000
    assert kept[-1] == ids[-1] and kept == list(ids[-len(kept) :])


def test_attachment_names() -> None:
    long_name = "x" * 300 + ".pdf"
    names = attachment_names(
        ["a.pdf", "A.pdf", "bad\x07name\u202e.txt", "", "../etc/passwd", long_name, long_name]
    )
    assert names[0] == "a.pdf"
    assert names[1] == "A (2).pdf"
    assert names[2] == "bad name.txt"
    assert names[3] == "attachment-4"
    assert names[4] == "_etc_passwd"
    assert len(names[5]) == 256 and names[5].endswith(".pdf")
    assert len(names[6]) == 256 and names[6].endswith(" (2).pdf")
    pattern = contract.limits().file_name_pattern
    assert all(contract.matches(pattern, name) for name in names)


def test_client_token_is_stable_and_specific() -> None:
    token = client_token(RAW, TARGET)
    assert token == client_token(RAW, Target(ROUTE, "SUPPORT@example.com"))  # addresses are case-insensitive
    assert token != client_token(RAW + b" ", TARGET)
    assert token != client_token(RAW, Target(ROUTE, "other@example.com"))
    assert token != client_token(
        RAW, Target(RouteSettings(match="*", instance_id="i-2"), "support@example.com")
    )
    assert len(token) <= 500
