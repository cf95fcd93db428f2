"""Reading the DATA section the way modern Postfix does (``smtpd_forbid_bare_newline = normalize``), as a
stream.

Real mail arrives with bare-LF line ends and with lines far over RFC 5321's 1,000 bytes (Outlook HTML,
unwrapped base64). Both are accepted: a bare LF is read as CRLF, and lines may be as long as the configured
bound. DATA ends only on the standard ``<CR><LF>.<CR><LF>``: a ``<LF>.<LF>`` or ``<LF>.<CR><LF>`` is content,
which closes the SMTP-smuggling hole. Whatever is refused is still read to its end, so that the reply
arrives in sequence and the session can go on.

Nothing holds the whole mail: the bytes go from the socket to a :class:`~gateway.mail.MailWriter` (memory,
then a spool file) in chunks of at most the line limit, and every step (end of data, dot-unstuffing, line
ends, line lengths) is done on whole chunks by the C-level ``bytes`` and ``re`` routines, in time linear in
the size of the mail, however the client splits its bytes into segments. :class:`DataDecoder` is the pure
part: chunks in, content out.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass

from gateway.mail import MailWriter
from gateway.replies import Replies, Reply

__all__ = ["DataDecoder", "DataResult", "read_data"]

PROGRESS_EVERY_BYTES = 256 * 1024  # the data timeout is "this much per data_timeout"
YIELD_EVERY_BYTES = 1024 * 1024  # a fast client never holds the event loop for longer than this takes
_END = b".\r\n"
_BARE_LF = re.compile(rb"(?<!\r)\n")
_STUFFED_DOT = re.compile(rb"(?m)^\.(?!\r\n)")  # a line's leading dot, unless the line is only "."


@dataclass(frozen=True)
class DataResult:
    size: int  # bytes of content (CRLF line ends, dot-stuffing removed)
    refusal: Reply | None = None


class DataDecoder:
    """The content of a DATA section from its raw bytes, fed in pieces of any size (without its end).

    Only whole lines are transformed; an unfinished line waits for its end (at most ``max_line`` bytes of
    it: a longer one is refused and dropped as it comes). After a refusal nothing more comes out.
    """

    def __init__(self, max_size: int, max_line: int) -> None:
        self._max_size = max_size
        self._max_line = max_line
        self._carry = b""  # the unfinished last line
        self._dropping = False  # the rest of a line already refused for its length
        self.size = 0
        self.refusal: Reply | None = None

    def feed(self, data: bytes) -> bytes:
        """The content of the whole lines ``data`` completes (CRLF line ends, dot-stuffing removed)."""
        last_lf = data.rfind(b"\n")
        if last_lf < 0:
            self._unfinished(data)
            return b""
        head, tail = data[: last_lf + 1], data[last_lf + 1 :]
        if self._dropping:  # the long line ends in this piece: drop it up to its LF
            first_lf = head.find(b"\n")
            head = head[first_lf + 1 :]
            self._dropping = False
        lines = self._carry + head
        self._carry = b""
        self._unfinished(tail)
        if not lines or self.refusal is not None:
            return b""
        content = _unstuffed(lines)
        if self._has_long_line(content):
            self._refuse(Replies.LINE_TOO_LONG.format(limit=self._max_line))
            return b""
        self.size += len(content)
        if self.size > self._max_size:
            self._refuse(Replies.TOO_BIG.format(limit=self._max_size))
            return b""
        return content

    def _unfinished(self, data: bytes) -> None:
        """Keep the start of a line until its end comes; a line that cannot fit is refused at once."""
        if self._dropping:
            return
        self._carry += data
        # A leading dot may still be removed and a trailing CR may be its line end: only beyond both is a
        # line certainly too long.
        if len(self._carry) > self._max_line + 2:
            self._refuse(Replies.LINE_TOO_LONG.format(limit=self._max_line))
            self._carry = b""
            self._dropping = True

    def _has_long_line(self, content: bytes) -> bool:
        """Whether a line of ``content`` (whole lines, CRLF) is longer than allowed, in linear time: every
        window of ``max_line + 2`` bytes from a line start must hold a line end."""
        window = self._max_line + 2
        start, size = 0, len(content)
        while size - start > window:
            last_lf = content.rfind(b"\n", start, start + window)
            if last_lf < 0:
                return True
            start = last_lf + 1
        return False

    def _refuse(self, reply: Reply) -> None:
        self.refusal = self.refusal or reply


def _unstuffed(lines: bytes) -> bytes:
    """Whole lines with CRLF line ends and no stuffed dot. The regular expressions look at every line
    start (70 us for 2 KB); most mail needs neither, which two C-speed searches tell (6 us)."""
    if lines.count(b"\n") != lines.count(b"\r\n"):
        lines = _BARE_LF.sub(b"\r\n", lines)
    if lines.startswith(b".") or b"\n." in lines:
        lines = _STUFFED_DOT.sub(b"", lines)
    return lines


async def read_data(
    reader: asyncio.StreamReader,
    writer: MailWriter,
    *,
    max_size: int,
    max_line: int,
    on_progress: Callable[[], None] = lambda: None,
) -> DataResult:
    """Read up to the end of DATA, writing the content to ``writer`` as it comes.

    ``reader`` must have been created with a limit of at least ``max_line + 2`` bytes: it is the largest
    piece read at once. Nothing after the end of DATA is read (pipelined commands stay in the reader).
    """
    decoder = DataDecoder(max_size, max_line)
    before = b"\r\n"  # the last two bytes read: the DATA command's line end, at first
    unreported = unyielded = 0
    while True:
        try:
            piece = await reader.readuntil(_END)
            end = (before + piece)[-5:-3] == b"\r\n"  # ".\r\n" alone on a line after a CRLF
        except asyncio.LimitOverrunError as error:  # no end in the buffer: take what is safe to take
            piece = await reader.readexactly(error.consumed)
            end = False
        content = decoder.feed(piece[: -len(_END)] if end else piece)
        if content:
            writer.write(content)
        if end:
            return DataResult(decoder.size, decoder.refusal)
        before = (before + piece)[-2:]
        unreported += len(piece)
        unyielded += len(piece)
        if unreported >= PROGRESS_EVERY_BYTES:
            on_progress()
            unreported = 0
        if unyielded >= YIELD_EVERY_BYTES:  # the bytes were all buffered: let other sessions run
            await asyncio.sleep(0)
            unyielded = 0
