"""The whole path over real sockets: smtplib → gateway → S3 (moto) and Connect (emulator) over HTTP."""

from __future__ import annotations

import asyncio
import base64
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.aws.clients import AwsClients, StaticCredentials
from gateway.contact.routing import TAG_ATTRIBUTE
from gateway.sandbox.emulator import EmulatorServer
from gateway.sandbox.s3server import EmbeddedS3
from gateway.service.gateway import Gateway
from gateway.settings import AttachmentSettings, AwsSettings, RouteSettings, Settings

from ..helpers import CREDENTIALS, SmtpClient, make_mail, make_settings, wait_until

PDF = b"%PDF-1.7\n" + os.urandom(5000)
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(3000)


def customer_mail(subject: str = "Frage zur Rechnung — 請求書", **headers: str) -> bytes:
    return make_mail(
        sender="Zoë Kundin <zoe@kunde.test>",
        subject=subject,
        message_id="<20261127.42@kunde.test>",
        text="Guten Tag,\nanbei die Unterlagen.\n",
        attachments=[("Rechnung März.pdf", "application/pdf", PDF), ("screenshot.png", "image/png", PNG)],
        headers={"Cc": "Chef <chef@kunde.test>", **headers},
    ).as_bytes()


async def download(url: str) -> bytes:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200
        return await response.read()


def contacts(emulator: EmulatorServer) -> list[Any]:
    return list(emulator.connect.contacts.values())


async def test_a_customer_mail_becomes_a_faithful_contact(smtp: SmtpClient, emulator: EmulatorServer) -> None:
    code, text = await smtp.send(customer_mail(), sender="zoe@kunde.test")
    assert code == 250, text
    [contact] = contacts(emulator)
    assert text == f"2.0.0 Delivered to Amazon Connect as contact {contact.contact_id}"
    request = contact.request
    assert request["InstanceId"] == "instance-1"
    assert request["FromEmailAddress"] == {"EmailAddress": "zoe@kunde.test", "DisplayName": "Zoë Kundin"}
    assert request["DestinationEmailAddress"] == "support@example.com"
    raw = request["EmailMessage"]["RawMessage"]
    assert raw["Subject"] == "Frage zur Rechnung — 請求書"
    assert raw["Body"] == "Guten Tag,\nanbei die Unterlagen.\n"
    assert raw["ContentType"] == "text/plain"
    assert raw["Headers"] == {"MESSAGE_ID": "<20261127.42@kunde.test>"}
    assert request["AdditionalRecipients"] == {
        "CcAddresses": [{"EmailAddress": "chef@kunde.test", "DisplayName": "Chef"}]
    }
    assert [a["FileName"] for a in request["Attachments"]] == ["Rechnung März.pdf", "screenshot.png"]
    downloaded = [await download(a["S3Url"]) for a in request["Attachments"]]
    assert downloaded == [PDF, PNG]
    await wait_until(lambda: all(a.fetched for a in contact.attachments))
    assert [a.size for a in contact.attachments] == [len(PDF), len(PNG)]


async def test_inspection_api_lists_contacts_and_calls(smtp: SmtpClient, emulator: EmulatorServer) -> None:
    await smtp.send(customer_mail())
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{emulator.url}/_emulator/contacts") as response:
            listed = (await response.json())["contacts"]
        async with http.get(f"{emulator.url}/_emulator/calls") as response:
            calls = (await response.json())["calls"]
        async with http.delete(f"{emulator.url}/_emulator/contacts") as response:
            assert response.status == 200
        async with http.get(f"{emulator.url}/_emulator/contacts") as response:
            assert (await response.json())["contacts"] == []
    assert len(listed) == 1
    assert set(listed[0]) == {"ContactId", "ReceivedAt", "Request", "Attachments", "Region", "AccessKeyId"}
    assert listed[0]["ReceivedAt"].endswith("Z")
    assert [c["Operation"] for c in calls] == ["StartEmailContact"]
    assert calls[0]["Status"] == 200


async def test_one_contact_per_routed_destination(smtp: SmtpClient, emulator: EmulatorServer) -> None:
    recipients = [
        "support@example.com",
        "support+vip@example.com",
        "a@help.example.com",
        "b@help.example.com",
    ]
    code, _ = await smtp.send(customer_mail(), recipients=recipients)
    assert code == 250
    made = {(c.request["InstanceId"], c.request["DestinationEmailAddress"]) for c in contacts(emulator)}
    assert made == {("instance-1", "support@example.com"), ("instance-2", "help@example.com")}


async def test_plus_tag_becomes_an_attribute(smtp: SmtpClient, emulator: EmulatorServer) -> None:
    await smtp.send(customer_mail(), recipients=["support+billing@example.com"])
    [contact] = contacts(emulator)
    assert contact.request["Attributes"] == {TAG_ATTRIBUTE: "billing"}
    assert contact.request["DestinationEmailAddress"] == "support@example.com"


@pytest.mark.parametrize(
    ("recipient", "expected"),
    [
        ("nobody@example.com", (550, "5.1.1")),
        ("victim@elsewhere.test", (550, "5.7.1")),
        ("bad address@example.com", (501, "5.1.3")),
    ],
)
async def test_refused_recipients_make_no_contact(
    smtp: SmtpClient, emulator: EmulatorServer, recipient: str, expected: tuple[int, str]
) -> None:
    code, text = await smtp.send(customer_mail(), recipients=[recipient])
    assert (code, text.split(" ")[0]) == expected
    assert contacts(emulator) == []


async def test_oversize_mail_makes_no_contact(
    emulator: EmulatorServer, s3_server: EmbeddedS3, bucket: str
) -> None:
    settings = make_settings(emulator, s3_server, bucket, max_message_size=5_000)
    async with Gateway(settings, CREDENTIALS) as gateway:
        code, text = await SmtpClient(gateway.smtp_port).send(customer_mail())
    assert (code, text.split(" ")[0]) == (552, "5.3.4")
    assert contacts(emulator) == []


@pytest.mark.parametrize(
    ("faults", "expected"),
    [
        ({"error_rate": 1.0}, "451 4.3.0 Amazon Connect answered with an error"),
        ({"throttle_rps": 0.001}, "451 4.4.5"),
    ],
)
async def test_transient_connect_errors_ask_for_a_retry_that_is_idempotent(
    smtp: SmtpClient, emulator: EmulatorServer, faults: dict[str, float], expected: str
) -> None:
    mail = customer_mail()
    async with aiohttp.ClientSession() as http:
        async with http.put(f"{emulator.url}/_emulator/faults", json=faults) as response:
            assert response.status == 200
        code, text = await smtp.send(mail)
        assert f"{code} {text}".startswith(expected)
        assert "Exception" not in text and "injected" not in text
        async with http.put(f"{emulator.url}/_emulator/faults", json={"error_rate": 0, "throttle_rps": 0}):
            pass
    for _ in range(2):  # the sending MTA retries, maybe more than once
        code, _ = await smtp.send(mail)
        assert code == 250
    assert len(contacts(emulator)) == 1


async def test_a_mail_to_many_recipients_names_every_contact_within_512_octets_a_line(
    emulator: EmulatorServer, s3_server: EmbeddedS3, bucket: str
) -> None:
    """Sync mode, 61 recipients: a multi-line 250 (read here off the socket as sent) keeps every ContactId."""
    routes = (RouteSettings(match="*@example.com", instance_id="instance-1"),)
    recipients = [f"agent{n}@example.com" for n in range(61)]
    async with Gateway(make_settings(emulator, s3_server, bucket, routes), CREDENTIALS) as gateway:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.smtp_port)

        async def reply() -> list[bytes]:
            lines = [await reader.readline()]
            while lines[-1][3:4] == b"-":
                lines.append(await reader.readline())
            return lines

        await reply()
        commands = ["EHLO client.test", "MAIL FROM:<zoe@kunde.test>", *(f"RCPT TO:<{r}>" for r in recipients)]
        for command in [*commands, "DATA"]:
            writer.write(command.encode() + b"\r\n")
            assert (await reply())[-1][:1] in (b"2", b"3")
        writer.write(customer_mail().replace(b"\r\n.", b"\r\n..") + b"\r\n.\r\n")
        lines = await reply()
        writer.close()
    assert max(len(line) for line in lines) <= 512 and all(line.endswith(b"\r\n") for line in lines)
    assert lines[0] == b"250-2.0.0 Delivered to Amazon Connect as 61 contacts:\r\n"
    assert lines[-1].startswith(b"250 2.0.0 ")
    named = ", ".join(line[10:].decode().strip() for line in lines[1:]).split(", ")
    assert sorted(named) == sorted(c.contact_id for c in contacts(emulator))
    assert len(set(named)) == 61


async def test_misconfiguration_is_transient(smtp: SmtpClient, emulator: EmulatorServer) -> None:
    emulator.connect.instances = frozenset({"another-instance"})  # ours is unknown: 404
    code, text = await smtp.send(customer_mail())
    assert (code, text.split(" ")[0]) == (451, "4.3.5")
    assert contacts(emulator) == []


async def test_a_destination_connect_refuses_is_permanent(smtp: SmtpClient, emulator: EmulatorServer) -> None:
    emulator.connect.addresses = ("*@elsewhere.example",)  # support@example.com is not an address of it
    code, text = await smtp.send(customer_mail())
    assert (code, text) == (554, "5.6.0 Amazon Connect refused this message")
    assert contacts(emulator) == []


async def test_partial_permanent_failure_still_delivers_the_rest(
    smtp: SmtpClient, emulator: EmulatorServer
) -> None:
    emulator.connect.addresses = ("support@example.com",)
    code, text = await smtp.send(customer_mail(), recipients=["support@example.com", "x@help.example.com"])
    assert code == 250
    assert text.endswith("refused for 1 recipient(s)")
    assert len(contacts(emulator)) == 1


async def test_retry_after_the_urls_changed_is_recognised_as_delivered(
    smtp: SmtpClient, emulator: EmulatorServer
) -> None:
    mail = customer_mail()
    first_code, _ = await smtp.send(mail)
    await asyncio.sleep(1.1)  # presigned URLs carry the signing second: the retried request differs
    second_code, second_text = await smtp.send(mail)
    assert (first_code, second_code) == (250, 250)
    assert "earlier attempt" in second_text
    assert len(contacts(emulator)) == 1
    assert [c["Status"] for c in emulator.connect.calls] == [200, 409]


async def test_s3_outage_is_transient(emulator: EmulatorServer, settings: Settings) -> None:
    settings = replace(settings, aws=replace(settings.aws, s3_endpoint_url="http://127.0.0.1:9"))
    async with Gateway(settings, CREDENTIALS) as gateway:
        code, text = await SmtpClient(gateway.smtp_port).send(customer_mail())
    assert (code, text.split(" ")[0]) == (451, "4.4.1")
    assert contacts(emulator) == []


def role_session_token(length: int = 1100) -> str:
    """A session token as long as STS hands to roles, with base64's +, / and = (which URL-encode longer)."""
    blob = base64.b64encode(os.urandom(length))[: length - 2].decode()
    return blob + "=="


async def test_long_session_token_keeps_urls_within_connect_limit(
    emulator: EmulatorServer, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Role credentials through the standard chain (the environment), as in production."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ASIAEXAMPLEEXAMPLE12")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", role_session_token())
    async with Gateway(settings) as gateway:
        code, _ = await SmtpClient(gateway.smtp_port).send(customer_mail())
    assert code == 250
    [contact] = contacts(emulator)
    urls = [a["S3Url"] for a in contact.request["Attachments"]]
    assert all("X-Amz-Security-Token=" in url and len(url) <= 2000 for url in urls)
    assert [await download(url) for url in urls] == [PDF, PNG]


async def test_real_aws_presigned_url_with_the_longest_prefix_fits() -> None:
    """Against AWS's own endpoint (signing needs no network): the worst case the config allows."""
    from gateway.aws.attachments import S3AttachmentStore, attachment_key
    from gateway.config.parse import MAX_PREFIX_CHARS

    credentials = StaticCredentials("ASIAEXAMPLEEXAMPLE12", "secret", role_session_token(1100))
    attachments = AttachmentSettings(bucket="b" * 63, prefix="p" * MAX_PREFIX_CHARS)
    async with AwsClients(AwsSettings(region="ap-southeast-2"), credentials) as aws:
        store = S3AttachmentStore(aws.s3, attachments)
        url = await store.presigned_url(attachment_key(attachments.prefix, "f" * 64, 50))
    assert url.startswith("https://")
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url
    assert len(url) <= 2000, len(url)


async def test_tls_and_auth_through_the_whole_gateway(
    emulator: EmulatorServer, settings: Settings, tmp_path: Path
) -> None:
    import ssl

    import trustme

    from gateway.frontdoor.credentials import hash_password
    from gateway.settings import AccessSettings, AuthSettings, TlsSettings

    ca = trustme.CA()
    certificate = ca.issue_cert("localhost")
    certificate.private_key_pem.write_to_path(tmp_path / "key.pem")
    certificate.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
    (tmp_path / "users").write_text(f"relay:{hash_password('pw', rounds=4)}\n")
    secured = replace(
        settings,
        tls=TlsSettings(certificate=tmp_path / "cert.pem", key=tmp_path / "key.pem", require_tls=True),
        auth=AuthSettings(credentials=tmp_path / "users"),
        access=AccessSettings(without_auth=()),  # everyone must log in
    )
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)

    def send(port: int) -> dict[str, Any]:
        import smtplib

        with smtplib.SMTP("localhost", port, timeout=10) as client:
            client.starttls(context=client_context)
            client.login("relay", "pw")
            return client.sendmail("zoe@kunde.test", ["support@example.com"], customer_mail())

    async with Gateway(secured, CREDENTIALS) as gateway:
        assert await asyncio.to_thread(send, gateway.smtp_port) == {}
    assert len(contacts(emulator)) == 1


async def test_an_out_of_office_reply_is_marked_for_the_flow(
    smtp: SmtpClient, emulator: EmulatorServer
) -> None:
    out_of_office = (
        b"From: Kunde <kunde@client.test>\r\nTo: support@example.com\r\nSubject: Abwesend\r\n"
        b"Auto-Submitted: auto-replied\r\n\r\nIch bin bis Montag nicht im Haus.\r\n"
    )
    await smtp.send(out_of_office, sender="kunde@client.test")
    await smtp.send(customer_mail(), sender="kunde@client.test")
    automatic, personal = contacts(emulator)
    assert automatic.request["Attributes"] == {"gateway_automatic": "auto-reply"}
    assert "Attributes" not in personal.request
