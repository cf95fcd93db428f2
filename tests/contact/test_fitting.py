"""What fits into a contact, and what is named as left out."""

from __future__ import annotations

import pytest

from gateway.contact import contract, fitting
from gateway.contact.fitting import EMPTY_BODY, TRUNCATION_NOTE, attachment_names, fit_mail
from gateway.message.mime import Mailbox, ParsedMail
from gateway.message.structure import Attachment
from gateway.settings import Body, ContentPolicy

POLICY = ContentPolicy()


@pytest.mark.parametrize(
    ("mail", "prefer", "body", "content_type"),
    [
        (ParsedMail(text_body="t", html_body="<p>h</p>"), "html", "<p>h</p>", "text/html"),
        (ParsedMail(text_body="t", html_body="<p>h</p>"), "text", "t", "text/plain"),
        (ParsedMail(html_body="<p>h</p>"), "text", "<p>h</p>", "text/html"),
        (ParsedMail(text_body="t", html_body="  "), "html", "t", "text/plain"),
        (ParsedMail(), "html", EMPTY_BODY, "text/plain"),
        (ParsedMail(text_body="\n"), "html", EMPTY_BODY, "text/plain"),
    ],
)
def test_body_choice(mail: ParsedMail, prefer: str, body: str, content_type: str) -> None:
    fitted = fit_mail(mail, ContentPolicy(prefer_body=Body(prefer)))
    assert (fitted.body, fitted.content_type) == (body, content_type)
    assert fitted.omissions == ()


def test_a_delivery_report_is_readable_in_the_body() -> None:
    text = fit_mail(ParsedMail(text_body="Delivery failed.", report="Action: failed\nStatus: 5.1.1"), POLICY)
    assert text.body == "Delivery failed.\n\n--- Delivery report ---\nAction: failed\nStatus: 5.1.1\n"
    html = fit_mail(ParsedMail(html_body="<p>x</p>", report="Status: <5.1.1>"), POLICY)
    assert "<pre>Status: &lt;5.1.1&gt;</pre>" in html.body
    alone = fit_mail(ParsedMail(report="Status: 5.1.1"), POLICY)
    assert alone.body.startswith("--- Delivery report ---")


def test_long_body_is_cut_at_a_character_boundary_with_a_note_and_named() -> None:
    fitted = fit_mail(ParsedMail(text_body="ü" * (3 * 1024 * 1024)), POLICY)
    assert fitted.body.endswith(TRUNCATION_NOTE)
    assert len(fitted.body.encode("utf-8")) <= contract.BODY_MAX_BYTES
    assert set(fitted.body[: -len(TRUNCATION_NOTE)]) == {"ü"}
    assert fitted.omissions == ("the end of the body, beyond Connect's 5 MiB",)


def test_subject_is_one_line_within_998_characters() -> None:
    fitted = fit_mail(ParsedMail(subject="a\r\nb\x00c" + "x" * 2000), POLICY)
    assert fitted.subject.startswith("a b c")
    assert len(fitted.subject) == 998
    assert fitted.omissions == ("the subject, shortened to 998 characters",)


def test_attachments_by_type_size_total_and_count() -> None:
    big = b"x" * 15_000_000
    attachments = (
        Attachment("report.PDF", "application/pdf", b"%PDF"),
        Attachment("tool.exe", "application/octet-stream", b"MZ"),
        Attachment("noextension", "application/octet-stream", b"?"),
        Attachment("huge.pdf", "application/pdf", b"x" * 21_000_000),
        Attachment("big1.pdf", "application/pdf", big),
        Attachment("big2.pdf", "application/pdf", big),
        *(Attachment(f"p{n}.png", "image/png", b"png") for n in range(60)),
    )
    fitted = fit_mail(ParsedMail(text_body="x", attachments=attachments), POLICY)
    assert fitted.names[:2] == ("report.PDF", "big1.pdf")
    assert len(fitted.attachments) == len(fitted.names) == contract.limits().attachments
    assert fitted.omissions[:4] == (
        "tool.exe (file type .exe is not accepted)",
        "noextension (file type without extension is not accepted)",
        "huge.pdf (21.0 MB, larger than the 20.0 MB allowed)",
        "big2.pdf (the mail would exceed 25.0 MB in all)",
    )
    assert fitted.omissions[4:] == tuple(f"p{n}.png (beyond Connect's 50 attachments)" for n in range(48, 60))


def test_any_type_when_configured() -> None:
    fitted = fit_mail(
        ParsedMail(attachments=(Attachment("tool.exe", "application/x-msdownload", b"MZ"),)),
        ContentPolicy(allowed_file_types=None),
    )
    assert fitted.names == ("tool.exe",)


def test_too_many_recipients_and_references_are_named() -> None:
    fitted = fit_mail(
        ParsedMail(
            to=tuple(Mailbox(f"r{n}@example.com") for n in range(60)),
            references=tuple(f"<{n:05d}-{'x' * 80}@example.com>" for n in range(400)),
        ),
        POLICY,
    )
    assert fitted.omissions == (
        "recipients beyond Connect's 49 in To and Cc",
        "the oldest message ids of the References header",
    )


def test_without_attachments_moves_them_all_to_the_omissions() -> None:
    fitted = fit_mail(ParsedMail(attachments=(Attachment("a.pdf", "application/pdf", b"1"),)), POLICY)
    stripped = fitted.without_attachments("Amazon Connect refused the attachments: INVALID_FILE_SIZE")
    assert (stripped.attachments, stripped.names) == ((), ())
    assert stripped.omissions == ("a.pdf (Amazon Connect refused the attachments: INVALID_FILE_SIZE)",)


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
    assert len(names[5]) == 256
    assert names[5].endswith(".pdf")
    assert len(names[6]) == 256
    assert names[6].endswith(" (2).pdf")
    pattern = contract.limits().file_name_pattern
    assert all(contract.matches(pattern, name) for name in names)


def test_many_alike_names_are_made_unique_in_linear_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """50,000 parts named alike once made the search for a free " (n)" quadratic (a frozen gateway);
    each name must cost a bounded number of tries, whatever came before."""
    tries = 0
    real = fitting._fit_name

    def counted(stem: str, extension: str, suffix: str, limit: int) -> str:
        nonlocal tries
        tries += 1
        return real(stem, extension, suffix, limit)

    monkeypatch.setattr(fitting, "_fit_name", counted)
    count = 5000
    names = attachment_names(["x.pdf"] * count + ["x (3).pdf", "X.PDF"])
    assert names[:3] == ["x.pdf", "x (2).pdf", "x (3).pdf"]
    assert names[-2:] == ["x (3) (2).pdf", f"X ({count + 1}).PDF"]
    assert len({name.casefold() for name in names}) == len(names)
    assert tries <= 2 * len(names) + 2
