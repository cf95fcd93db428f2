"""Reading the DATA section the way modern Postfix does (``smtpd_forbid_bare_newline = normalize``).

Real mail arrives with bare-LF line ends and with lines far over RFC 5321's 1,000 bytes (Outlook HTML,
unwrapped base64). Both are accepted: a bare LF is read as CRLF, and lines may be as long as the configured
bound. DATA ends only on the standard ``<CR><LF>.<CR><LF>``: a ``<LF>.<LF>`` or ``<LF>.<CR><LF>`` is content,
which closes the SMTP-smuggling hole. Whatever is refused is still read to its end, so that the reply
arrives in sequence and the session can go on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from gateway.replies import Replies, Reply

__all__ = ["DataResult", "read_data"]

PROGRESS_EVERY_BYTES = 256 * 1024


@dataclass(frozen=True)
class DataResult:
    content: bytes
    refusal: Reply | None = None


async def read_data(
    reader: asyncio.StreamReader,
    *,
    max_size: int,
    max_line: int,
    on_progress: Callable[[], None] = lambda: None,
) -> DataResult:
    """Read up to the end of DATA; the content has CRLF line ends and the dot-stuffing removed.

    ``reader`` must have been created with a limit of at least ``max_line + 2`` bytes; a longer line is
    reported by the reader as a :class:`asyncio.LimitOverrunError` and refused here.
    """
    lines: list[bytes] = []
    size = 0
    unreported = 0
    refusal: Reply | None = None
    after_crlf = True  # the DATA command line ended with one
    in_long_line = False
    dropped_cr = False  # the dropped part of a long line ended with the CR of its CRLF
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as error:
            # Drop what was buffered of the long line. When the LF is already buffered, ``consumed`` reaches
            # up to it, so the CR before it goes too: remember it, or the line would not end with CRLF and
            # the next ``.<CRLF>`` would be taken for content.
            dropped = await reader.readexactly(error.consumed)
            dropped_cr = dropped.endswith(b"\r")
            in_long_line = True
            refusal = refusal or Replies.LINE_TOO_LONG.format(limit=max_line)
            lines.clear()
            continue
        unreported += len(line)
        if unreported >= PROGRESS_EVERY_BYTES:
            on_progress()
            unreported = 0
        if in_long_line:  # the rest of a line already refused
            in_long_line = False
            after_crlf = line.endswith(b"\r\n") or (line == b"\n" and dropped_cr)
            continue
        if line == b".\r\n" and after_crlf:
            break
        after_crlf = line.endswith(b"\r\n")
        content = line[:-2] if after_crlf else line[:-1]
        if content.startswith(b".") and len(content) > 1:
            content = content[1:]
        if len(content) > max_line:
            refusal = refusal or Replies.LINE_TOO_LONG.format(limit=max_line)
        size += len(content) + 2
        if size > max_size:
            refusal = refusal or Replies.TOO_BIG.format(limit=max_size)
        if refusal is None:
            lines.append(content)
        else:
            lines.clear()
    if refusal is not None:
        return DataResult(b"", refusal)
    lines.append(b"")
    return DataResult(b"\r\n".join(lines))
