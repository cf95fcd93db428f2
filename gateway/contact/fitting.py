"""What of a parsed mail fits into a Connect contact, and what is left out (and said so): pure.

Connect limits a contact: a subject of 998 characters, a body of 5 MiB, file names of 256 characters
without control characters, a number of attachments, their types (by default only the list below) and
sizes (20 MB each, 25 MB with the body). Everything that does not fit is named in
:attr:`FittedMail.omissions`; whenever that list is not empty the delivery stores the original message in
S3 and links it from the contact, so nothing is ever silently dropped.
"""

from __future__ import annotations

import html
import os
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, replace

import regex

from gateway.contact import contract
from gateway.message.mime import ParsedMail, parse_mail
from gateway.message.structure import Attachment
from gateway.settings import ContentPolicy

__all__ = [
    "EMPTY_BODY",
    "TRUNCATION_NOTE",
    "UNREADABLE_BODY",
    "FittedMail",
    "attachment_names",
    "clean_line",
    "fit_mail",
    "unreadable_mail",
]

EMPTY_BODY = "(This email has no text.)"
UNREADABLE_BODY = (
    "The gateway could not read this email ({reason}), so this contact shows only what its header says."
    ' The original message is kept as it arrived: see the reference "Original email".'
)
TRUNCATION_NOTE = "\n\n[The gateway shortened this body to fit Amazon Connect's size limit.]"
REPORT_HEADING = "Delivery report"

_CONTROL = regex.compile(r"\p{C}+")


@dataclass(frozen=True)
class FittedMail:
    """The contact's share of a mail: all within Connect's limits, with what was left out named."""

    mail: ParsedMail
    subject: str
    body: str
    content_type: str
    attachments: tuple[Attachment, ...]
    names: tuple[str, ...]  # the forwarded attachments' final file names, in the same order
    omissions: tuple[str, ...]

    def without_attachments(self, reason: str) -> FittedMail:
        """The same contact when Connect refuses the attachments themselves."""
        left_out = tuple(f"{name} ({reason})" for name in self.names)
        return replace(self, attachments=(), names=(), omissions=self.omissions + left_out)


def unreadable_mail(head: bytes, reason: str) -> FittedMail:
    """The contact of a mail that could not be read: what its header section (``head``: its first bytes,
    bounded) says, and a body that says why there is nothing more. The whole message is an omission, so
    the original is stored and linked."""
    end = head.find(b"\r\n\r\n")
    mail = parse_mail(head[: end + 4] if end >= 0 else head, received=True)
    fitted = fit_mail(mail, ContentPolicy())
    body = UNREADABLE_BODY.format(reason=reason)
    return replace(
        fitted,
        body=body,
        content_type="text/plain",
        attachments=(),
        names=(),
        omissions=(f"the content of the message: it could not be read ({reason})",),
    )


def clean_line(text: str) -> str:
    """One line of text without control or format characters (they are invisible or break layouts)."""
    return " ".join(_CONTROL.sub(" ", text).split())


def fit_mail(mail: ParsedMail, policy: ContentPolicy) -> FittedMail:
    limits = contract.limits()
    omissions: list[str] = []
    subject = clean_line(mail.subject)
    if len(subject) > limits.subject_chars:
        subject = subject[: limits.subject_chars]
        omissions.append(f"the subject, shortened to {limits.subject_chars} characters")
    body, content_type = _body(mail, policy.prefer_body)
    fitted_body = _fit_body(body)
    if fitted_body != body:
        omissions.append("the end of the body, beyond Connect's 5 MiB")
    attachments, names, left_out = _fit_attachments(
        mail.attachments, policy, len(fitted_body.encode("utf-8"))
    )
    omissions.extend(left_out)
    recipients = {m.address.casefold() for m in (*mail.to, *mail.cc)}
    if len(recipients) > limits.additional_recipients + 1:  # one of them may be the destination itself
        omissions.append(f"recipients beyond Connect's {limits.additional_recipients} in To and Cc")
    if len(" ".join(mail.references)) > limits.header_value_chars:
        omissions.append("the oldest message ids of the References header")
    return FittedMail(mail, subject, fitted_body, content_type, attachments, names, tuple(omissions))


def _body(mail: ParsedMail, prefer: str) -> tuple[str, str]:
    has_html = bool(mail.html_body and mail.html_body.strip())
    has_text = bool(mail.text_body and mail.text_body.strip())
    if has_html and (prefer == "html" or not has_text):
        body, content_type = mail.html_body or "", "text/html"
        if mail.report:
            body += f"\n<hr>\n<h3>{REPORT_HEADING}</h3>\n<pre>{html.escape(mail.report)}</pre>\n"
        return body, content_type
    body = (mail.text_body or "") if has_text else ""
    if mail.report:
        body = f"{body.rstrip()}\n\n--- {REPORT_HEADING} ---\n{mail.report}\n".lstrip()
    return (body, "text/plain") if body.strip() else (EMPTY_BODY, "text/plain")


def _fit_body(body: str) -> str:
    """The body within 5 MiB of UTF-8, cut at a character boundary with a visible note when too long."""
    limits = contract.limits()
    budget = min(limits.body_bytes, limits.body_chars)
    encoded = body.encode("utf-8")
    if len(encoded) <= budget and len(body) <= limits.body_chars:
        return body
    room = budget - len(TRUNCATION_NOTE.encode("utf-8"))
    return encoded[:room].decode("utf-8", errors="ignore") + TRUNCATION_NOTE


def _fit_attachments(
    attachments: Iterable[Attachment], policy: ContentPolicy, body_bytes: int
) -> tuple[tuple[Attachment, ...], tuple[str, ...], list[str]]:
    """The attachments Connect will take, their names, and one line for each one it will not."""
    attachments = tuple(attachments)
    names = attachment_names(a.filename for a in attachments)
    limit = contract.limits().attachments
    kept: list[Attachment] = []
    kept_names: list[str] = []
    left_out: list[str] = []
    total = body_bytes
    for attachment, name in zip(attachments, names, strict=True):
        extension = os.path.splitext(name)[1].lower()
        size = len(attachment.data)
        if policy.allowed_file_types is not None and extension not in policy.allowed_file_types:
            reason = f"file type {extension or 'without extension'} is not accepted"
        elif size > policy.max_file_size:
            reason = f"{_megabytes(size)}, larger than the {_megabytes(policy.max_file_size)} allowed"
        elif total + size > policy.max_total_size:
            reason = f"the mail would exceed {_megabytes(policy.max_total_size)} in all"
        elif len(kept) == limit:
            reason = f"beyond Connect's {limit} attachments"
        else:
            kept.append(attachment)
            kept_names.append(name)
            total += size
            continue
        left_out.append(f"{name} ({reason})")
    return tuple(kept), tuple(kept_names), left_out


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"


def attachment_names(names: Iterable[str]) -> list[str]:
    """File names Connect accepts: no control characters, at most 256 characters, unique in the contact."""
    limit = contract.limits().file_name_chars
    taken: set[str] = set()
    next_number: dict[tuple[str, str], int] = {}  # per name, the first " (n)" not tried yet: linear time
    result = []
    for index, original in enumerate(names, start=1):
        name = unicodedata.normalize("NFC", clean_line(original).replace("/", "_").replace("\\", "_")).strip(
            ". "
        )
        stem, extension = _split(name or f"attachment-{index}")
        candidate = _fit_name(stem, extension, "", limit)
        if candidate.casefold() in taken:
            key = (stem.casefold(), extension.casefold())
            number = next_number.get(key, 2)
            candidate = _fit_name(stem, extension, f" ({number})", limit)
            while candidate.casefold() in taken:
                number += 1
                candidate = _fit_name(stem, extension, f" ({number})", limit)
            next_number[key] = number + 1
        taken.add(candidate.casefold())
        result.append(candidate)
    return result


def _split(name: str) -> tuple[str, str]:
    stem, extension = os.path.splitext(name)
    return (stem, extension) if stem and len(extension) <= 16 else (name, "")


def _fit_name(stem: str, extension: str, suffix: str, limit: int) -> str:
    """Cut the stem, never the extension or the number: the file still opens with the right program."""
    return stem[: limit - len(suffix) - len(extension)].rstrip() + suffix + extension
