"""About 1,000 public real-world mails that nobody on this project wrote, through parse → fit → request.

The corpus lives outside the repository and is read in place from the directory that
``MAIL_GATEWAY_CORPUS`` names (``.ci/run`` sets it to ``../shared/corpus``); without it these tests skip
and say so, except under CI (``CI=true``), where its absence is a failure. The figures are printed at the end
of the run.
"""

from __future__ import annotations

import io
import json
import mailbox
from collections.abc import Iterator
from contextlib import redirect_stdout
from email import message_from_bytes
from email.message import Message
from email.policy import compat32
from pathlib import Path

import pytest

from gateway.cli import main as cli_main
from gateway.contact import contract
from gateway.contact.fitting import fit_mail
from gateway.contact.request import StoredFile, build_request
from gateway.mail import Target
from gateway.message import mime
from gateway.message.mime import parse_mail
from gateway.message.structure import MAX_DEPTH
from gateway.message.tnef import is_tnef, read_tnef
from gateway.settings import ContentPolicy, RouteSettings

from ..helpers import CORPUS, CORPUS_VARIABLE, unavailable

TARGET = Target(RouteSettings(match="*", instance_id="corpus-instance"), "support@example.com")
STATS: dict[str, object] = {}


def corpus() -> Path:
    if CORPUS is None:
        unavailable(f"{CORPUS_VARIABLE} is not set: point it at the public mail corpus (../shared/corpus)")
    assert CORPUS is not None
    if not (CORPUS / "INDEX.tsv").exists():
        unavailable(f"the public mail corpus is not at {CORPUS} ({CORPUS_VARIABLE})")
    return CORPUS


def corpus_files() -> list[Path]:
    root = corpus()
    lines = (root / "INDEX.tsv").read_text().splitlines()[1:]
    listed = [root / line.split("\t")[0] for line in lines if line.strip()]
    extra = sorted(root.glob("*/mailbox/*")) + sorted(root.glob("mimekit/mbox/*"))
    return listed + [path for path in extra if path not in listed]


def corpus_messages() -> Iterator[tuple[str, bytes]]:
    """Each mail file, and each message of each mbox file (the 0-3 byte files included)."""
    for path in corpus_files():
        name = str(path.relative_to(corpus()))
        if path.parent.name in ("mailbox", "mbox") and path.stat().st_size > 3:
            box = mailbox.mbox(path)
            for key in box.iterkeys():
                yield f"{name}#{key}", box.get_bytes(key)
            box.close()
        else:
            yield name, path.read_bytes()


def leaf_files(part: Message, depth: int = 0) -> Iterator[Message]:
    """Parts a reader would call attachments (named or marked so), not inside forwarded messages."""
    if depth > MAX_DEPTH or part.get_content_type().startswith("message/"):
        return
    if part.is_multipart():
        payload = part.get_payload()
        for child in payload if isinstance(payload, list) else []:
            if isinstance(child, Message):
                yield from leaf_files(child, depth + 1)
        return
    disposition = str(part.get("content-disposition") or "").split(";")[0].strip().lower()
    try:
        named = part.get_filename() is not None
    except Exception:
        named = False
    if (disposition == "attachment" or named) and not is_tnef(part.get_content_type(), None):
        yield part


def test_every_corpus_mail_becomes_a_valid_request_with_its_attachments_intact() -> None:
    total = exceptions = valid = preserved = attachments_seen = 0
    failures: list[str] = []
    for name, raw in corpus_messages():
        total += 1
        try:
            mail = parse_mail(raw)
            fitted = fit_mail(mail, ContentPolicy())
            files = [
                StoredFile(n, f"https://bucket.s3.us-east-1.amazonaws.com/k/{i}")
                for i, n in enumerate(fitted.names)
            ]
            request = build_request(
                fitted, TARGET, raw, files, "sender@client.test", original="https://original"
            )
        except Exception as error:  # counted, and the test fails below
            exceptions += 1
            failures.append(f"{name}: {type(error).__name__}: {error}")
            continue
        problems = contract.violations(request)
        if problems:
            failures.append(f"{name}: {problems[0]}")
        else:
            valid += 1
        ours = [a.data for a in mail.attachments]
        for part in leaf_files(message_from_bytes(raw, policy=compat32)):
            data = part.get_payload(decode=True)
            if not isinstance(data, bytes):
                continue
            attachments_seen += 1
            if data in ours:
                preserved += 1
            else:
                failures.append(f"{name}: attachment {part.get_filename()!r} not preserved")
        assert len(fitted.attachments) + sum(1 for o in fitted.omissions if o.endswith(")")) >= len(
            fitted.names
        )
    STATS.update(
        messages=total, exceptions=exceptions, valid=valid, attachments=attachments_seen, preserved=preserved
    )
    assert failures == []
    assert total > 1000
    assert exceptions == 0
    assert valid == total
    assert preserved == attachments_seen > 100


def tnef_payloads() -> list[Path]:
    return sorted((CORPUS / "mimekit" / "tnef-raw").glob("*.tnef")) if CORPUS and CORPUS.exists() else []


@pytest.mark.parametrize("path", tnef_payloads(), ids=lambda p: p.stem)
def test_raw_winmail_dat_payloads_decode_to_their_listed_names(path: Path) -> None:
    corpus_files()
    opened = read_tnef(path.read_bytes())
    assert opened is not None
    names = [f.filename for f in opened.files] + opened.body_names
    expected = path.with_suffix(".list").read_text().splitlines()
    missing = [n for n in expected if n not in names]  # MimeKit's own test: each listed name is found
    assert missing == [], f"decoded {names}"


def test_tnef_payloads_are_all_there() -> None:
    corpus_files()
    assert len(tnef_payloads()) == 19


def read(relative: str) -> bytes:
    return (corpus() / relative).read_bytes()


def test_tnef_mails_yield_their_real_attachments_and_body() -> None:
    rich = parse_mail(read("mimekit/tnef/rich-text.eml"))
    names = [a.filename for a in rich.attachments]
    assert names == [
        "kitten-playing-with-a-christmas-tree.jpg",
        "Untitled Attachment",
        "Untitled Attachment",
        "body.rtf",
    ]
    kitten = rich.attachments[0]
    assert kitten.content_type == "image/jpeg"
    assert kitten.data.startswith(b"\xff\xd8\xff")
    assert len(kitten.data) == 375081
    assert rich.attachments[3].data.startswith(b"{\\rtf1")
    assert "winmail.dat" not in names
    ukrainian = parse_mail(read("mimekit/tnef/ukr.eml"))
    assert ukrainian.html_body is not None
    assert "<p>шостий</p>" in ukrainian.html_body  # the body inside winmail.dat, in its own codepage


def test_iso_2022_jp_and_gb2312_subjects() -> None:
    japanese = parse_mail(read("mimekit/messages/japanese.txt"))
    assert japanese.subject == "日本語メールテスト (testing Japanese emails)"
    assert "日本語が\n正常に\n送れているか" in (japanese.text_body or "")
    chinese = parse_mail(read("gapfill/spamscope-mail-parser/mail_test_12"))
    assert chinese.subject == "代开各地增值税发票"
    assert chinese.sender is not None
    assert chinese.sender.display_name == "张先生"
    other = parse_mail(read("gapfill/spamscope-mail-parser/mail_test_9"))
    assert other.subject.startswith("我把镜头拉近些")


def test_a_forwarded_message_becomes_an_eml_attachment() -> None:
    mail = parse_mail(read("mimekit/messages/simple-embedded-message.eml"))
    assert mail.text_body == "This is the message body.\n"
    [forwarded] = mail.attachments
    assert (forwarded.filename, forwarded.content_type) == ("embedded message.eml", "message/rfc822")
    inner = message_from_bytes(forwarded.data)
    assert inner["Subject"] == "embedded message"


def test_signed_mail_shows_its_content_and_a_bounce_is_readable() -> None:
    smime = parse_mail(read("mimekit/smime/thunderbird-signed.txt"))
    assert (smime.text_body or "").startswith("This message is being generated and signed by Thunderbird")
    assert [a.filename for a in smime.attachments] == ["signed.jpg", "smime.p7s"]
    pgp = parse_mail(read("mimekit/openpgp/[Announce] GnuPG 2.1.20 released.eml"))
    assert "The GnuPG team is pleased to announce" in (pgp.text_body or "")
    bounce = fit_mail(
        parse_mail(read("sisimai-set-of-emails/maildir/bsd/lhost-postfix-01.eml")), ContentPolicy()
    )
    assert "--- Delivery report ---" in bounce.body
    assert "Status: 5.1.1" in bounce.body
    assert "Final-Recipient: rfc822; r@p351355.pool.example.ne.jp" in bounce.body


def test_a_calendar_invitation_is_kept_as_an_ics_file() -> None:
    mail = parse_mail(read("gapfill/postal-mime/calendar-event.eml"))
    assert mail.subject.startswith("Invitation: Test event ⏰")
    assert mail.html_body is not None
    ics = [a for a in mail.attachments if a.filename.endswith(".ics")]
    assert ics
    assert all(a.data.startswith(b"BEGIN:VCALENDAR") for a in ics)


def test_parse_command_prints_a_valid_request_for_every_corpus_file() -> None:
    checked = 0
    for path in corpus_files():
        out = io.StringIO()
        with redirect_stdout(out):
            status = cli_main(["--log-level", "ERROR", "parse", str(path), "--rcpt", "support@example.com"])
        assert status == 0, path
        [request] = json.loads(out.getvalue())
        assert contract.violations(request) == [], path
        checked += 1
    STATS["parse_command_files"] = checked
    assert checked > 1000


def test_the_chunked_parse_reads_every_corpus_mail_as_the_whole_mail_parse(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reader parses a received mail from its file in chunks, and takes a single-part body whole
    (``mime._one_text_body``); the same bytes parsed by ``message_from_bytes`` in one piece give the same
    reading, field by field."""
    compared = 0
    for name, raw in corpus_messages():
        received = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        chunked = parse_mail(io.BytesIO(received), received=True)
        with monkeypatch.context() as patched:
            whole = message_from_bytes(mime.smtp_header_view(received), policy=compat32)
            patched.setattr(mime, "_message", lambda chunks, received, whole=whole: whole)
            assert parse_mail(received, received=True) == chunked, name
        compared += 1
    assert compared > 1000
