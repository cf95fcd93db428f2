"""Whatever cannot go into the contact is kept in S3, linked from the contact, and named there."""

from __future__ import annotations

import urllib.parse
from dataclasses import replace
from email.policy import SMTP
from pathlib import Path
from typing import Any

import pytest

from gateway.contact.request import OMITTED_REFERENCE, ORIGINAL_REFERENCE
from gateway.sandbox.emulator import EmulatorServer
from gateway.sandbox.s3server import EmbeddedS3
from gateway.service.gateway import Gateway
from gateway.settings import AttachmentSettings, Settings

from ..helpers import CREDENTIALS, SmtpClient, contacts, make_mail, spool_settings, wait_until


def mail_with(*files: tuple[str, str, bytes]) -> bytes:
    message = make_mail(
        subject="Files", message_id="<files@client.test>", text="see the files", attachments=files
    )
    return message.as_bytes(policy=SMTP)


def fetch(locator: str, s3: EmbeddedS3) -> bytes:
    """The object behind a locator, read with credentials, as an operator would (it is not public)."""
    assert locator.startswith(s3.url)
    bucket, _, key = urllib.parse.unquote(urllib.parse.urlsplit(locator).path).lstrip("/").partition("/")
    return bytes(s3.client().get_object(Bucket=bucket, Key=key)["Body"].read())


def with_attachments(settings: Settings, **changes: Any) -> Settings:
    return replace(settings, attachments=replace(settings.attachments, **changes))


async def test_a_file_connect_does_not_take_is_named_and_the_original_linked(
    settings: Settings, emulator: EmulatorServer, s3_server: EmbeddedS3
) -> None:
    raw = mail_with(
        ("invoice.pdf", "application/pdf", b"%PDF-1.4"), ("setup.exe", "application/x-msdownload", b"MZ")
    )
    async with Gateway(settings, CREDENTIALS) as gateway:
        code, _ = await SmtpClient(gateway.smtp_port).send(raw)
    assert code == 250
    [contact] = contacts(emulator)
    request = contact.request
    assert [a["FileName"] for a in request["Attachments"]] == ["invoice.pdf"]
    references = request["References"]
    assert references[OMITTED_REFERENCE] == {
        "Type": "STRING",
        "Value": "setup.exe (file type .exe is not accepted)",
    }
    original = references[ORIGINAL_REFERENCE]
    assert original["Type"] == "URL"
    assert fetch(original["Value"], s3_server) == raw  # the original as received, byte for byte


@pytest.mark.parametrize("mode", ["sync", "spool"])
async def test_attachments_connect_refuses_are_left_out_and_the_mail_still_delivered(
    settings: Settings, emulator: EmulatorServer, s3_server: EmbeddedS3, tmp_path: Path, mode: str
) -> None:
    emulator.connect.file_types = frozenset({".txt"})  # an instance stricter than the gateway's policy
    if mode == "spool":
        settings = replace(settings, queue=spool_settings(tmp_path / "spool"))
    raw = mail_with(("invoice.pdf", "application/pdf", b"%PDF-1.4"))
    async with Gateway(settings, CREDENTIALS) as gateway:
        code, _ = await SmtpClient(gateway.smtp_port).send(raw)
        assert code == 250
        await wait_until(lambda: len(contacts(emulator)) == 1)
    [contact] = contacts(emulator)
    assert "Attachments" not in contact.request
    left_out = contact.request["References"][OMITTED_REFERENCE]["Value"]
    assert left_out == "invoice.pdf (Amazon Connect refused the attachments: INVALID_FILE_TYPE)"
    assert fetch(contact.request["References"][ORIGINAL_REFERENCE]["Value"], s3_server) == raw
    statuses = [call["Status"] for call in emulator.connect.calls]
    assert statuses == [400, 200]
    assert emulator.connect.calls[0]["Response"]["Reason"] == {
        "AttachedFileInvalidRequestExceptionReason": "INVALID_FILE_TYPE"
    }


async def test_the_original_of_every_mail_when_the_operator_asks(
    settings: Settings, emulator: EmulatorServer, s3_server: EmbeddedS3
) -> None:
    settings = with_attachments(settings, store_original="always")
    raw = mail_with(("a.pdf", "application/pdf", b"%PDF"))
    async with Gateway(settings, CREDENTIALS) as gateway:
        await SmtpClient(gateway.smtp_port).send(raw)
    references = contacts(emulator)[0].request["References"]
    assert OMITTED_REFERENCE not in references
    assert fetch(references[ORIGINAL_REFERENCE]["Value"], s3_server) == raw


async def test_a_long_body_is_cut_with_a_note_and_the_original_linked(
    settings: Settings, emulator: EmulatorServer, s3_server: EmbeddedS3
) -> None:
    raw = make_mail(subject="Long", text="line of text\n" * 500_000).as_bytes(policy=SMTP)  # 6.5 MB
    async with Gateway(with_attachments(settings), CREDENTIALS) as gateway:
        code, _ = await SmtpClient(gateway.smtp_port).send(raw)
    assert code == 250
    request = contacts(emulator)[0].request
    body = request["EmailMessage"]["RawMessage"]["Body"]
    assert body.endswith("[The gateway shortened this body to fit Amazon Connect's size limit.]")
    assert request["References"][OMITTED_REFERENCE]["Value"] == "the end of the body, beyond Connect's 5 MiB"
    assert fetch(request["References"][ORIGINAL_REFERENCE]["Value"], s3_server) == raw


def test_attachment_settings_default_to_connects_own_list() -> None:
    defaults = AttachmentSettings("b-1")
    assert ".pdf" in (defaults.allowed_file_types or ())
    assert ".exe" not in (defaults.allowed_file_types or ())
