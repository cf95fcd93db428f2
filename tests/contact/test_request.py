"""A parsed mail to a StartEmailContact request: every field, every limit, always valid."""

from __future__ import annotations

from email.message import EmailMessage
from typing import Any, cast

from gateway.contact import contract
from gateway.contact.fitting import fit_mail
from gateway.contact.request import (
    FALLBACK_SENDER,
    OMITTED_REFERENCE,
    ORIGINAL_REFERENCE,
    WITHOUT_ATTACHMENTS,
    StoredFile,
    build_request,
    client_token,
)
from gateway.contact.routing import TAG_ATTRIBUTE
from gateway.mail import Target
from gateway.message.mime import Mailbox, ParsedMail, parse_mail
from gateway.message.structure import Attachment
from gateway.settings import ContentPolicy, RouteSettings

ROUTE = RouteSettings(match="support@example.com", instance_id="instance-1")
TARGET = Target(ROUTE, "support@example.com")
RAW = b"raw bytes of the mail"


def build(mail: ParsedMail, target: Target = TARGET, **options: Any) -> dict[str, Any]:
    """The request, checked against the model, as a plain dict for the test to look into."""
    request = build_request(fit_mail(mail, ContentPolicy()), target, RAW, **options)
    assert contract.violations(request) == []
    return cast("dict[str, Any]", request)


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
    headers = build(ParsedMail(references=ids))["EmailMessage"]["RawMessage"]["Headers"]
    kept = headers["REFERENCES"].split(" ")
    assert len(headers["REFERENCES"]) <= 20000
    assert kept[-1] == ids[-1] and kept == list(ids[-len(kept) :])


def test_client_token_is_stable_and_specific() -> None:
    token = client_token(RAW, TARGET)
    assert token == client_token(RAW, Target(ROUTE, "SUPPORT@example.com"))  # addresses are case-insensitive
    assert token != client_token(RAW + b" ", TARGET)
    assert token != client_token(RAW, Target(ROUTE, "other@example.com"))
    assert token != client_token(
        RAW, Target(RouteSettings(match="*", instance_id="i-2"), "support@example.com")
    )
    assert len(token) <= 500


def test_client_token_variant_is_its_own_and_stable() -> None:
    plain = client_token(RAW, TARGET)
    variant = client_token(RAW, TARGET, WITHOUT_ATTACHMENTS)
    assert variant != plain
    assert variant == client_token(RAW, TARGET, WITHOUT_ATTACHMENTS)


def test_reply_to_as_sender_for_web_forms() -> None:
    mail = ParsedMail(
        sender=Mailbox("noreply@forms.example.com", "Web form"),
        reply_to=(Mailbox("customer@client.test", "Real Customer"),),
        text_body="x",
    )
    route = RouteSettings(match="*", instance_id="i", sender_from_reply_to=True)
    assert build(mail, Target(route, "a@b.co"))["FromEmailAddress"] == {
        "EmailAddress": "customer@client.test",
        "DisplayName": "Real Customer",
    }
    assert build(mail)["FromEmailAddress"]["EmailAddress"] == "noreply@forms.example.com"


def test_the_original_is_linked_and_what_was_left_out_is_named_within_4096_bytes() -> None:
    route = RouteSettings(
        match="*",
        instance_id="i",
        references={"Portal": {"Type": "URL", "Value": "https://p.example.com/" + "x" * 2900}},
    )
    attachments = tuple(Attachment(f"program-{n}.exe", "application/octet-stream", b"MZ") for n in range(200))
    fitted = fit_mail(ParsedMail(text_body="x", attachments=attachments), ContentPolicy())
    locator = "https://s3.console.aws.amazon.com/s3/object/bucket?region=us-east-1&prefix=inbound%2Fabc%2Foriginal.eml"
    request = build_request(fitted, Target(route, "a@b.co"), RAW, original=locator)
    references = request["References"]
    assert references[ORIGINAL_REFERENCE] == {"Type": "URL", "Value": locator}
    assert references["Portal"]["Type"] == "URL"
    summary = references[OMITTED_REFERENCE]
    assert summary["Type"] == "STRING"
    assert summary["Value"].startswith("program-0.exe (file type .exe is not accepted); program-1.exe")
    assert summary["Value"].endswith("...")
    assert contract.violations(request) == []


def test_what_was_left_out_is_named_even_without_an_original() -> None:
    attachments = (Attachment("setup.exe", "application/octet-stream", b"MZ"),)
    fitted = fit_mail(ParsedMail(text_body="x", attachments=attachments), ContentPolicy())
    request = build_request(fitted, Target(RouteSettings(match="*", instance_id="i"), "a@b.co"), RAW)
    assert request["References"] == {
        OMITTED_REFERENCE: {"Type": "STRING", "Value": "setup.exe (file type .exe is not accepted)"}
    }
    assert contract.violations(request) == []
