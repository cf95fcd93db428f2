"""Leaving infected files out of a mail that is delivered without them (the ``strip`` virus policy)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace

from gateway.message.mime import ParsedMail
from gateway.trust.results import InfectedFile

__all__ = ["without_infected"]


def without_infected(
    mail: ParsedMail, infected: Sequence[InfectedFile]
) -> tuple[ParsedMail, tuple[str, ...]]:
    """The mail without the infected files, and one line naming each for ``Not in this contact``.

    Files are matched by their SHA-256 as well as their place, so that a mail parsed again later (by the
    delivery) loses exactly the files that were scanned."""
    if not infected:  # the common case: no digest of every file to compute
        return mail, ()
    digests = {f.sha256: f for f in infected}
    kept = []
    left_out: list[str] = []
    for attachment in mail.attachments:
        found = digests.get(hashlib.sha256(attachment.data).hexdigest())
        if found is None:
            kept.append(attachment)
        else:
            left_out.append(f"{attachment.filename} (a virus was found: {found.signature})")
    return replace(mail, attachments=tuple(kept)), tuple(left_out)
