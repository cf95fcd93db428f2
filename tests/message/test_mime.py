"""Raw bytes to a parsed mail: structure, body choice, attachments, headers."""

from __future__ import annotations

import base64
import io
from email.message import EmailMessage, Message
from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.message import mime, structure
from gateway.message.mime import parse_mail

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))


def mail_with_attachments() -> bytes:
    message = EmailMessage()
    message["From"] = '"Zoë Customer" <zoe@client.test>'
    message["To"] = "support@example.com, Other <other@example.org>"
    message["Cc"] = "=?UTF-8?Q?J=C3=B6rg?= <joerg@example.net>"
    message["Subject"] = "Ünïcode subject"
    message["Message-ID"] = "<m1@client.test>"
    message["In-Reply-To"] = "<m0@example.com>"
    message["References"] = "<root@example.com> <m0@example.com>"
    message.set_content("plain text")
    message.add_alternative("<p>html text</p>", subtype="html")
    message.add_attachment(PNG, maintype="image", subtype="png", filename="screen shot.png")
    message.add_attachment(b"%PDF-1.4 data", maintype="application", subtype="pdf", filename="Rechnung ü.pdf")
    return message.as_bytes()


def test_full_mail() -> None:
    mail = parse_mail(mail_with_attachments())
    assert mail.subject == "Ünïcode subject"
    assert mail.sender is not None
    assert (mail.sender.address, mail.sender.display_name) == ("zoe@client.test", "Zoë Customer")
    assert [m.address for m in mail.to] == ["support@example.com", "other@example.org"]
    assert [(m.address, m.display_name) for m in mail.cc] == [("joerg@example.net", "Jörg")]
    assert mail.message_id == "<m1@client.test>"
    assert mail.in_reply_to == "<m0@example.com>"
    assert mail.references == ("<root@example.com>", "<m0@example.com>")
    assert mail.html_body is not None and "html text" in mail.html_body
    assert mail.text_body is not None and "plain text" in mail.text_body
    assert [(a.filename, a.content_type, a.data) for a in mail.attachments] == [
        ("screen shot.png", "image/png", PNG),
        ("Rechnung ü.pdf", "application/pdf", b"%PDF-1.4 data"),
    ]


def test_plain_single_part_with_bare_lf_line_ends() -> None:
    mail = parse_mail(b"From: a@b.test\nSubject: hi\n\nline one\nline two\n")
    assert mail.subject == "hi"
    assert mail.text_body == "line one\nline two\n"
    assert mail.html_body is None and mail.attachments == ()


def test_related_html_keeps_inline_images_as_attachments() -> None:
    message = EmailMessage()
    message["Subject"] = "inline"
    message.set_content("text")
    message.add_alternative('<img src="cid:logo@x">', subtype="html")
    html_part = cast("list[EmailMessage]", message.get_payload())[1]
    html_part.add_related(PNG, maintype="image", subtype="png", cid="<logo@x>")
    mail = parse_mail(message.as_bytes())
    assert mail.html_body is not None and "cid:logo@x" in mail.html_body
    assert len(mail.attachments) == 1
    image = mail.attachments[0]
    assert image.content_id == "logo@x" and image.data == PNG
    assert image.filename.endswith(".png")


def test_forwarded_message_becomes_an_eml_attachment() -> None:
    inner = EmailMessage()
    inner["Subject"] = "Original question"
    inner.set_content("the original")
    outer = EmailMessage()
    outer["Subject"] = "Fwd: Original question"
    outer.set_content("see below")
    outer.add_attachment(inner)
    mail = parse_mail(outer.as_bytes())
    assert mail.text_body is not None and "see below" in mail.text_body
    assert [a.filename for a in mail.attachments] == ["Original question.eml"]
    assert b"the original" in mail.attachments[0].data


def test_rfc2231_and_8bit_file_names() -> None:
    raw = (
        b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\nbody\r\n"
        b"--XX\r\nContent-Type: application/pdf\r\n"
        b"Content-Disposition: attachment;\r\n filename*0*=UTF-8''%E6%97%A5%E6%9C%AC;\r\n"
        b" filename*1*=%E8%AA%9E.pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(b"pdf") + b"\r\n"
        b'--XX\r\nContent-Type: text/plain; name="Gr\xc3\xbc\xc3\x9fe.txt"\r\n'
        b"Content-Disposition: attachment\r\n\r\nhello\r\n"
        b'--XX\r\nContent-Type: application/octet-stream; name="=?UTF-8?B?w6k=?=.bin"\r\n\r\nx\r\n--XX--\r\n'
    )
    mail = parse_mail(raw)
    assert [a.filename for a in mail.attachments] == ["日本語.pdf", "Grüße.txt", "é.bin"]
    assert mail.attachments[0].data == b"pdf"


def test_degenerate_input_never_raises() -> None:
    for raw in (
        b"",
        b"\r\n",
        b"x",
        b"\x00\xff\xfe",
        b"Subject: only a header",
        b"Content-Type: multipart/mixed\r\n\r\n",
    ):
        mail = parse_mail(raw)
        assert mail.sender is None


def test_broken_address_headers_still_yield_addresses() -> None:
    mail = parse_mail(b"From: broken <<a@b.test>\r\nTo: ,,, x@y.test ;\r\n\r\nbody")
    assert mail.sender is not None and mail.sender.address == "a@b.test"
    assert [m.address for m in mail.to] == ["x@y.test"]


class _Trickle(io.BytesIO):
    """A file that gives at most ``step`` bytes a read, so that a blank line can fall across two reads."""

    def __init__(self, data: bytes, step: int) -> None:
        super().__init__(data)
        self._step = step

    def read(self, size: int | None = -1) -> bytes:
        return super().read(self._step)


@pytest.mark.parametrize("step", [1, 2, 3, 5, 64])
def test_the_header_section_is_found_however_the_file_is_read(step: int) -> None:
    raw = b"Subject: split\r\nX-Long: " + b"v" * 200 + b"\r\n\r\nbody\r\n\r\nmore\r\n"
    head, rest = mime._header_section(_Trickle(raw, step))
    assert head == raw[: mime.header_end(raw)]
    assert head.endswith(b"v\r\n\r\n") and raw.startswith(head + rest)
    assert parse_mail(_Trickle(raw, step), received=True) == parse_mail(raw, received=True)


def test_a_mail_without_a_blank_line_is_all_header_section() -> None:
    raw = b"Subject: no body\r\nX: " + b"y" * 100_000
    assert mime._header_section(io.BytesIO(raw)) == (raw, b"")


_ENCODED_TEXT = st.text(
    alphabet=st.sampled_from(
        list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\r\n -*é")
    ),
    max_size=200,
)


@given(
    text=st.one_of(_ENCODED_TEXT, st.binary(max_size=150).map(lambda b: base64.encodebytes(b).decode())),
    encoding=st.sampled_from(["base64", "BASE64", " base64", "quoted-printable", ""]),
)
def test_a_file_is_decoded_as_the_library_decodes_it(text: str, encoding: str) -> None:
    """A file's text is taken out of its part and decoded from one copy at a time: the bytes and the
    defects recorded are get_payload(decode=True)'s, whatever the text (junk, bad padding, non-ASCII) and
    the transfer encoding."""
    parts = []
    for _ in range(2):
        part = Message()
        part["Content-Transfer-Encoding"] = encoding
        part.set_payload(text)
        parts.append(part)
    ours, library = parts
    assert structure._taken_payload(ours) == library.get_payload(decode=True)
    assert [type(d) for d in ours.defects] == [type(d) for d in library.defects]
    assert ours.get_payload() == ""  # taken: the encoded text is not held twice
