"""Property-based: generated messages (random structure, charsets, names, sizes) always make valid requests,
attachment bytes survive exactly, and subjects and file names round-trip.

The profile is bounded (see ``conftest.py``): ``HYPOTHESIS_PROFILE=thorough`` runs many more examples.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP

from hypothesis import given
from hypothesis import strategies as st

from gateway.contact import contract
from gateway.contact.fitting import clean_line, fit_mail
from gateway.contact.request import StoredFile, build_request
from gateway.mail import Target
from gateway.message.mime import parse_mail
from gateway.settings import ContentPolicy, RouteSettings

CHARSETS = ("utf-8", "iso-8859-1", "koi8-r", "shift_jis", "gb2312", "iso-2022-jp", "windows-1252", "us-ascii")
CONTENT_TYPES = ("application/pdf", "image/png", "application/octet-stream", "text/csv", "application/zip")
TARGET = Target(RouteSettings(match="*", instance_id="i"), "support@example.com")


@dataclass(frozen=True)
class GeneratedFile:
    name: str
    content_type: str
    data: bytes


def _encodable(charset: str) -> st.SearchStrategy[str]:
    def fits(text: str) -> bool:
        try:
            text.encode(charset)
        except UnicodeEncodeError:
            return False
        return True

    alphabet = st.characters(exclude_categories=["Cs"], max_codepoint=0x9FFF)
    return st.text(alphabet, max_size=200).filter(fits)


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str, str]:
    charset = draw(st.sampled_from(CHARSETS))
    return charset, draw(_encodable(charset))


# Control characters in names are the sanitizer's business (test_fitting); the stdlib will not write them.
names = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=300)
files = st.builds(GeneratedFile, names, st.sampled_from(CONTENT_TYPES), st.binary(max_size=3000))


@st.composite
def messages(draw: st.DrawFn) -> tuple[bytes, str, list[GeneratedFile]]:
    message = EmailMessage()
    subject = draw(st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=1200))
    message["Subject"] = subject
    message["From"] = "Customer <customer@client.test>"
    message["To"] = "support@example.com"
    kind = draw(st.sampled_from(("text", "html", "alternative", "none")))
    charset, text = draw(bodies())
    if kind in ("text", "alternative"):
        message.set_content(text, charset=charset)
    if kind == "html":
        message.set_content(f"<p>{text}</p>", subtype="html", charset=charset)
    if kind == "alternative":
        message.add_alternative(f"<p>{text}</p>", subtype="html", charset=charset)
    attached = draw(st.lists(files, max_size=5))
    for file in attached:
        maintype, subtype = file.content_type.split("/")
        message.add_attachment(file.data, maintype=maintype, subtype=subtype, filename=file.name)
    if draw(st.booleans()):
        inner = EmailMessage()
        inner["Subject"] = "forwarded"
        inner.set_content("inner body")
        message.add_attachment(inner)
    for number, part in enumerate(message.walk()):
        if part.is_multipart():  # the stdlib would draw boundaries from `random`, which Hypothesis forbids
            part.set_boundary(f"=_generated_boundary_{number}_=")
    return message.as_bytes(policy=SMTP), subject, attached


@given(messages())
def test_generated_mail_always_makes_a_valid_request(
    generated: tuple[bytes, str, list[GeneratedFile]],
) -> None:
    raw, subject, attached = generated
    mail = parse_mail(raw)
    fitted = fit_mail(mail, ContentPolicy(allowed_file_types=None))
    stored = [StoredFile(name, f"https://b.s3.amazonaws.com/{n}") for n, name in enumerate(fitted.names)]
    request = build_request(fitted, TARGET, raw, stored, "customer@client.test", original="https://original")
    assert contract.violations(request) == []
    ours = [a for a in mail.attachments if a.content_type != "message/rfc822"]
    assert [a.data for a in ours] == [f.data for f in attached]  # byte for byte, in order
    for parsed, generated_file in zip(ours, attached, strict=True):  # names round-trip; blank ones get one
        assert clean_line(parsed.filename) == (clean_line(generated_file.name) or clean_line(parsed.filename))
        assert parsed.filename
    assert clean_line(mail.subject) == clean_line(subject)
    expected_subject = clean_line(subject)[:998]
    assert request["EmailMessage"]["RawMessage"]["Subject"] == expected_subject
