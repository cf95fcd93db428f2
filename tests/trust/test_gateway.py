"""The checks in the running gateway: smtplib → front door (SPF, DKIM, DMARC, rspamd, clamd at DATA) →
spool → workers → S3 (moto) and Connect (emulator), each over its real socket.

What a unit of :mod:`gateway.trust` cannot show: the refusal is the SMTP reply and nothing is stored; the
verdicts survive the spool and reach the contact; an infected file never reaches S3 nor Connect.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.contact import contract
from gateway.contact.request import OMITTED_REFERENCE, ORIGINAL_REFERENCE
from gateway.sandbox.emulator import EmulatorServer
from gateway.sandbox.s3server import EmbeddedS3
from gateway.service.gateway import Gateway
from gateway.settings import (
    AccessSettings,
    AuthenticationSettings,
    FilterSettings,
    Settings,
    StoreOriginal,
    VirusAction,
)

from ..helpers import CREDENTIALS, SmtpClient, contacts, make_mail, make_settings, spool_settings, wait_until
from .conftest import SigningKey, dns_settings
from .servers import EICAR, Clamd, Rspamd, TestDns

AUTHSERV = "mx.gateway.test"
SUPPORT = "support@example.com"

Start = Callable[..., Any]


def raw(
    sender: str, files: list[tuple[str, bytes]] | None = None, headers: dict[str, str] | None = None
) -> bytes:
    attachments = [(name, "application/octet-stream", data) for name, data in files or []]
    message = make_mail(
        sender=sender, subject="Invoice", message_id=f"<{sender}.1@client.test>", headers=headers,
        attachments=attachments,
    )  # fmt: skip
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


@pytest.fixture
async def start(
    emulator: EmulatorServer, s3_server: EmbeddedS3, bucket: str, test_dns: TestDns, tmp_path: Path
) -> AsyncIterator[Start]:
    """A spooling gateway whose checks ask the test DNS server; the test client (127.0.0.1) is judged as
    the internet is unless ``relay_networks`` names loopback."""
    running: list[Gateway] = []

    async def start_gateway(
        filters: FilterSettings | None = None,
        relay_networks: tuple[Any, ...] = (),
        **attachments: Any,
    ) -> Gateway:
        base = make_settings(emulator, s3_server, bucket, queue=spool_settings(tmp_path / "spool"))
        settings: Settings = dataclasses.replace(
            base,
            access=AccessSettings(relay_networks=relay_networks),
            authentication=AuthenticationSettings(enabled=True, authserv_id=AUTHSERV),
            filters=filters or FilterSettings(),
            dns=dns_settings(test_dns),
            attachments=dataclasses.replace(base.attachments, **attachments),
        )
        gateway = Gateway(settings, CREDENTIALS)
        await gateway.__aenter__()
        running.append(gateway)
        return gateway

    yield start_gateway
    for gateway in running:
        await gateway.__aexit__(None, None, None)


async def delivered(emulator: EmulatorServer, count: int = 1) -> list[Any]:
    await wait_until(lambda: len(contacts(emulator)) >= count)
    return contacts(emulator)


def stored_objects(s3_server: EmbeddedS3, bucket: str) -> dict[str, bytes]:
    s3 = s3_server.client()
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {item["Key"]: s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read() for item in listed}


async def test_a_forged_from_of_a_reject_domain_is_refused_at_data(
    start: Start,
    test_dns: TestDns,
    emulator: EmulatorServer,
    s3_server: EmbeddedS3,
    bucket: str,
    tmp_path: Path,
) -> None:
    test_dns.add("_dmarc.gw-bank.test", "TXT", "v=DMARC1; p=reject")
    test_dns.add("gw-bank.test", "TXT", "v=spf1 ip4:192.0.2.0/24 -all")
    gateway = await start()
    code, text = await SmtpClient(gateway.smtp_port).send(raw("ceo@gw-bank.test"), sender="x@gw-evil.test")
    assert (code, text.split(" ")[0]) == (550, "5.7.1")
    assert "gw-bank.test" in text
    assert contacts(emulator) == []
    assert stored_objects(s3_server, bucket) == {}
    assert list((tmp_path / "spool" / "mail").iterdir()) == []


async def test_an_own_relay_is_not_judged(start: Start, test_dns: TestDns, emulator: EmulatorServer) -> None:
    """``[access] relay_networks`` is the one list of own routers: the forged From above, relayed by one of
    them, is delivered with its checks recorded as internal."""
    test_dns.add("_dmarc.gw-bank2.test", "TXT", "v=DMARC1; p=reject")
    gateway = await start(relay_networks=AccessSettings().relay_networks)
    code, _ = await SmtpClient(gateway.smtp_port).send(raw("ceo@gw-bank2.test"), sender="x@gw-evil.test")
    assert code == 250
    [contact] = await delivered(emulator)
    assert contact.request["Attributes"]["gateway_spf"] == "none"


async def test_a_signed_mail_carries_its_verdicts_through_the_spool(
    start: Start, test_dns: TestDns, signing_key: SigningKey, emulator: EmulatorServer
) -> None:
    test_dns.add("_dmarc.gw-signed.test", "TXT", "v=DMARC1; p=reject")
    test_dns.add("sel._domainkey.gw-signed.test", "TXT", signing_key.record)
    test_dns.add("gw-signed.test", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    mail = signing_key.sign(raw("alice@gw-signed.test"), "gw-signed.test")
    gateway = await start()
    code, text = await SmtpClient(gateway.smtp_port).send(mail, sender="alice@gw-signed.test")
    assert code == 250, text
    [contact] = await delivered(emulator)
    attributes = contact.request["Attributes"]
    assert (attributes["gateway_spf"], attributes["gateway_dkim"], attributes["gateway_dmarc"]) == (
        "pass",
        "pass",
        "pass",
    )
    assert contract.violations(contact.request) == []


async def test_spam_is_delivered_with_connects_spam_verdict(
    start: Start, rspamd_server: Rspamd, emulator: EmulatorServer
) -> None:
    gateway = await start(FilterSettings(rspamd_url=rspamd_server.url, rspamd_timeout=10.0))
    mail = raw("someone@gw-spam.test", headers={"X-Test-Action": "add header"})
    code, _ = await SmtpClient(gateway.smtp_port).send(mail, sender="someone@gw-spam.test")
    assert code == 250
    [contact] = await delivered(emulator)
    assert contact.request["EmailMessage"]["RawMessage"]["Headers"]["X_SES_SPAM_VERDICT"] == "FAIL"
    assert contact.request["Attributes"]["gateway_spam_action"] == "add header"
    assert contract.violations(contact.request) == []


async def test_rspamds_reject_is_the_smtp_reply(
    start: Start, rspamd_server: Rspamd, emulator: EmulatorServer
) -> None:
    gateway = await start(FilterSettings(rspamd_url=rspamd_server.url, rspamd_timeout=10.0))
    mail = raw("someone@gw-spam2.test", headers={"X-Test-Action": "reject"})
    code, text = await SmtpClient(gateway.smtp_port).send(mail, sender="someone@gw-spam2.test")
    assert (code, text.split(" ")[0]) == (550, "5.7.1")
    assert contacts(emulator) == []


def scanning(clamd: Clamd, virus: VirusAction) -> FilterSettings:
    return FilterSettings(clamd_address=clamd.socket, clamd_timeout=10.0, virus=virus)


async def test_a_virus_is_refused_and_never_stored(
    start: Start, clamd_server: Clamd, emulator: EmulatorServer, s3_server: EmbeddedS3, bucket: str
) -> None:
    gateway = await start(scanning(clamd_server, VirusAction.REFUSE))
    mail = raw("someone@gw-virus.test", files=[("invoice.com", EICAR)])
    code, text = await SmtpClient(gateway.smtp_port).send(mail, sender="someone@gw-virus.test")
    assert (code, text.split(" ")[0]) == (554, "5.7.1")
    assert contacts(emulator) == []
    assert stored_objects(s3_server, bucket) == {}


async def test_stripped_files_never_reach_s3_nor_connect(
    start: Start, clamd_server: Clamd, emulator: EmulatorServer, s3_server: EmbeddedS3, bucket: str
) -> None:
    """The ``strip`` policy delivers the mail without the infected file, names it in the contact, and keeps
    no original (which would carry the file), even when the operator asks for every original."""
    gateway = await start(scanning(clamd_server, VirusAction.STRIP), store_original=StoreOriginal.ALWAYS)
    clean = b"%PDF-1.7 a clean invoice"
    mail = raw("someone@gw-virus2.test", files=[("invoice.pdf", clean), ("invoice.com", EICAR)])
    code, _ = await SmtpClient(gateway.smtp_port).send(mail, sender="someone@gw-virus2.test")
    assert code == 250
    [contact] = await delivered(emulator)
    request = contact.request
    assert [a["FileName"] for a in request["Attachments"]] == ["invoice.pdf"]
    references = request["References"]
    assert ORIGINAL_REFERENCE not in references
    assert "invoice.com (a virus was found" in references[OMITTED_REFERENCE]["Value"]
    assert request["EmailMessage"]["RawMessage"]["Headers"]["X_SES_VIRUS_VERDICT"] == "FAIL"
    assert contract.violations(request) == []
    stored = stored_objects(s3_server, bucket)
    assert list(stored.values()) == [clean]
    calls = json.dumps(list(emulator.connect.calls))
    assert EICAR.decode() not in calls
    assert base64.b64encode(EICAR).decode()[:40] not in calls
