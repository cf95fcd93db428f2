"""How many parts a mail has and how deeply they nest, measured before it is parsed, in linear time.

The standard library's parser builds one object per part and recurses once per level of nesting (about a
thousand levels exhaust the interpreter's stack), so a 2 MB mail of 50,000 parts, or of 990 nested
multiparts, costs far more to parse than its size says. :func:`measure` finds the same structure the
parser will see, from the boundaries alone: every line that starts with ``--`` (after a CRLF, a LF or a
lone CR, as the parser splits lines) is looked up among the boundaries open at that point, and only the
small header block of each part is read (with the parser's own header reader, so its Content-Type and
boundary are exactly the parser's). It stops as soon as a limit is passed, so a hostile mail costs at most
a limit's worth of header blocks. Pure.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import mmap

    Buffer = bytes | mmap.mmap  # the mail in memory, or a map of its spool file: never a copy

__all__ = ["Shape", "measure"]

# Where a header block ends: a line end followed by a line that is neither a header nor a continuation
# (an empty line, or a body line when the empty line is missing): the parser's own rule (headerRE).
_HEADERS_END = re.compile(rb"(?>\r\n|\r|\n)(?!From |[\x21-\x39\x3b-\x7e]*:|[ \t])")
_LINE_END = re.compile(rb"\r\n|\r|\n")
# Each line end followed by another: an upper bound of the blocks a delivery-status body holds.
_LINE_END_BEFORE_LINE_END = re.compile(rb"(?>\r\n|\r|\n)(?=\r\n|\r|\n)")
_HEADER_PARSER = BytesHeaderParser(policy=compat32)


@dataclass(frozen=True)
class Shape:
    parts: int  # message objects the parser will make: the mail, each part, each attached message
    depth: int  # containers (multipart or message) nested in one another, the mail's own included


@dataclass
class _Open:
    """A multipart whose closing boundary has not been seen."""

    boundary: bytes
    depth: int
    digest: bool  # multipart/digest: its parts are messages unless they say otherwise


def measure(data: Buffer, *, max_parts: int, max_depth: int, top: Message | None = None) -> Shape:
    """The mail's :class:`Shape`, or the first one found beyond ``max_parts`` or ``max_depth``. ``top``:
    the mail's own header section, when the caller has read it already."""
    scan = _Scan(data, max_parts, max_depth, top)
    return scan.run()


class _Scan:
    def __init__(self, data: Buffer, max_parts: int, max_depth: int, top: Message | None = None) -> None:
        self.data = data
        self.top = top
        self.max_parts = max_parts
        self.max_depth = max_depth
        self.parts = 0
        self.depth = 0
        self.open: list[_Open] = []
        self.by_boundary: dict[bytes, list[int]] = {}  # boundary -> indexes into self.open
        self.status_body: tuple[int, int] | None = None  # a delivery-status body: where, at what depth
        # Where no CR comes right before ``--``, a boundary line follows a LF: its search can start with a
        # literal (ten times faster); a mail with lone CRs as line ends gets the search for either. (From 0:
        # a memory map's find starts at its position.)
        self.line_ends = b"\n" if data.find(b"\r--", 0) < 0 else b"\r\n"

    def over(self) -> bool:
        return self.parts > self.max_parts or self.depth > self.max_depth

    def run(self) -> Shape:
        self.part(0, 0, "text/plain")
        position = 0
        while self.open and not self.over():
            # Only the open boundaries can end a part: search for exactly those (at C speed), and search
            # again with the new set whenever it changes.
            boundaries = tuple(o.boundary for o in self.open)
            match = _boundary_lines(boundaries, self.line_ends).search(self.data, position)
            if match is None:
                break
            position = match.end()
            self.boundary_line(match)
        self.count_status_blocks(len(self.data))
        return Shape(self.parts, self.depth)

    def boundary_line(self, match: re.Match[bytes]) -> None:
        """A line that is one of the open boundaries: the next part, or the end of a multipart."""
        self.count_status_blocks(match.start() + 1)
        index = self.by_boundary[match.group(1)][-1]
        closing = match.group(2) is not None
        self.close_above(index + 1)  # a boundary of an outer multipart ends every inner one
        if closing:
            self.close_above(index)
            return
        container = self.open[index]
        default = "message/rfc822" if container.digest else "text/plain"
        self.part(_after_line_end(self.data, match.end()), container.depth + 1, default)

    def close_above(self, index: int) -> None:
        while len(self.open) > index:
            closed = self.open.pop()
            self.by_boundary[closed.boundary].pop()

    def part(self, start: int, depth: int, default: str) -> None:
        """A part starting at ``start``: read its headers, and open what it contains."""
        while not self.over():  # a part, then the message inside it when it is one (message/rfc822)
            self.parts += 1
            self.depth = max(self.depth, depth)
            read = self.top if start == 0 and depth == 0 else None
            headers, head_end = (read, -1) if read is not None else _header_block(self.data, start, default)
            kind = headers.get_content_type()
            if head_end < 0 and kind.startswith("message/"):  # where its body starts is needed after all
                head_end = _header_block(self.data, start, default)[1]
            if kind.startswith("multipart/"):
                boundary = headers.get_boundary()
                if boundary is not None:
                    self.open_multipart(boundary.encode("utf-8", "surrogateescape"), depth, kind)
                return
            if kind == "message/delivery-status":  # its blocks of fields are counted where it ends
                self.status_body = (head_end, depth + 1)
                return
            if not kind.startswith("message/"):
                return
            start, depth, default = head_end, depth + 1, "text/plain"

    def count_status_blocks(self, end: int) -> None:
        """A delivery-status body is one object per block of fields, one level down."""
        if self.status_body is None:
            return
        start, depth = self.status_body
        self.status_body = None
        self.parts += len(_LINE_END_BEFORE_LINE_END.findall(self.data, start, end)) + 1
        self.depth = max(self.depth, depth)

    def open_multipart(self, boundary: bytes, depth: int, kind: str) -> None:
        self.open.append(_Open(boundary, depth, kind == "multipart/digest"))
        self.by_boundary.setdefault(boundary, []).append(len(self.open) - 1)


@functools.lru_cache(maxsize=256)
def _boundary_lines(boundaries: tuple[bytes, ...], line_ends: bytes) -> re.Pattern[bytes]:
    """A line that is ``--`` one of ``boundaries``, optionally ``--`` again, then blanks and its end (the
    parser's own rule for a boundary line), after one of ``line_ends``."""
    choices = b"|".join(re.escape(b) for b in sorted(set(boundaries), key=len, reverse=True))
    # The line end before it is part of the match (a lookbehind would be slower); a part never starts at
    # the very first byte (the mail's own header block comes first).
    lead = re.escape(line_ends) if len(line_ends) == 1 else b"[" + line_ends + b"]"
    return re.compile(lead + rb"--(" + choices + rb")(--)?[ \t]*(?=\r|\n|\Z)")


def _after_line_end(data: Buffer, position: int) -> int:
    """Past the line end at ``position`` (CRLF, LF or CR), if there is one."""
    end = _LINE_END.match(data, position)
    return end.end() if end else position


def _header_block(data: Buffer, start: int, default: str) -> tuple[Message, int]:
    """The headers of the part at ``start`` (read by the parser's own header reader) and where its body
    starts; the search stops at the first line that is not a header, so it costs the header's length."""
    first = _LINE_END.match(data, start)
    if first is not None:  # an empty first line: no headers at all
        block, body = b"", first.end()
    else:
        end = _HEADERS_END.search(data, start)
        if end is None:
            block, body = data[start:], len(data)
        else:
            block = data[start : end.end()]
            blank = _LINE_END.match(data, end.end())
            body = blank.end() if blank else end.end()
    message = _HEADER_PARSER.parsebytes(bytes(block))
    if default != "text/plain":
        message.set_default_type(default)
    return message, body
