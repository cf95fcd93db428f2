"""Long runs of base64 lines, folded into one line while the standard library's parser reads the mail.

The parser handles a mail line by line (for each: a boundary check per open multipart, a list append), which
made it nine tenths of a reader's time for a mail with attachments: 100 KB of base64 is 1,300 lines. A run
of lines made only of base64's alphabet can be no boundary (``--``), no header (``:``, a leading blank),
no empty line, and no line end hides inside one; so to the parser one such line stands for many: where a
run of them was, it reads a single token line, the same line end after it, and the run's text goes back
where the token landed (a payload, a preamble, an epilogue) once the parse is done. The result is the
parse of the unfolded mail, held equal to it by the corpus test and a property test.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from email.feedparser import FeedParser
from email.message import Message
from email.policy import compat32

__all__ = ["FoldingParser"]

RUN_LINES = 16  # a shorter run is fed as it is: folding it would save less than it costs
_BASE64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_SHAPE = bytes(
    b"A"[0] if byte in _BASE64 else byte if byte in b"\r\n" else b"#"[0] for byte in range(256)
)  # a line's shape: its alphabet letters as A, line ends as they are, any other byte as #
_RUN_START = re.compile(rb"^(?:A++\r?\n){%d}" % RUN_LINES, re.MULTILINE)  # a run's first lines
_MORE_LINES = re.compile(rb"(?:A++\r?\n)*")
_BLOCK_LINES = 64  # lines of one width are skipped this many at a time (one comparison in C)
_TOKEN = re.compile(r"(GW[0-9a-f]{32}R)([0-9]+)")  # a token line as the parser kept it: nonce, run's index


class FoldingParser:
    """A ``compat32`` feed parser whose long base64 runs are folded as they are fed (see the module).

    Runs are only looked for between line ends seen in the same piece of text, so a piece boundary (or a
    CR that a later LF may complete) never changes where the parser's lines end."""

    def __init__(self) -> None:
        self._parser = FeedParser(policy=compat32)
        self._token = f"GW{secrets.token_hex(16)}R"  # letters and digits: a line the parser reads like a run
        self._runs: list[str] = []
        self._at_line_start = True

    def feed(self, data: bytes) -> None:
        """Feed the next bytes of the mail (decoded as ``BytesFeedParser`` decodes them)."""
        text = data.decode("ascii", "surrogateescape")
        start = 0 if self._at_line_start else text.find("\n") + 1
        end = text.rfind("\n") + 1
        fed = 0
        if self._at_line_start or start:  # a line begins in this text (else all of it is one line's middle)
            for run_start, run_end in _runs(data.translate(_SHAPE), start, end):
                lines = text[run_start:run_end]
                line_end = 2 if lines.endswith("\r\n") else 1
                self._parser.feed(text[fed:run_start])
                self._parser.feed(f"{self._token}{len(self._runs)}{lines[-line_end:]}")
                self._runs.append(lines[:-line_end])
                fed = run_end
        self._parser.feed(text[fed:])
        self._at_line_start = text.endswith("\n") if text else self._at_line_start

    def close(self) -> Message:
        """The parsed mail, every folded run back in its place."""
        message = self._parser.close()
        if self._runs:
            _unfold(message, self._token, self._runs)
        return message


def _runs(shape: bytes, start: int, end: int) -> Iterator[tuple[int, int]]:
    """Where the runs of ``shape[start:end]`` are (``end`` after a line end). A regular expression finds a
    run's first lines; the rest, as long as they have the last one's width (base64 text's lines do), are
    compared with it block by block, in C, rather than matched a character at a time."""
    position = start
    while found := _RUN_START.search(shape, position, end):
        line = shape[shape.rfind(b"\n", found.start(), found.end() - 1) + 1 : found.end()]
        block, run_end = line * _BLOCK_LINES, found.end()
        while shape.startswith(block, run_end):  # a block ends with a line end, so never past ``end``
            run_end += len(block)
        while shape.startswith(line, run_end):
            run_end += len(line)
        more = _MORE_LINES.match(shape, run_end, end)
        assert more is not None  # ``*``: it matches, if only the empty string
        run_end = more.end()
        yield found.start(), run_end
        position = run_end


def _unfold(message: Message, token: str, runs: list[str]) -> None:
    """Put each run back where its token is, releasing it once placed (each token is in one place)."""

    def run(found: re.Match[str]) -> str:
        if found.group(1) != token:  # another parse's token, in this mail's own text
            return found.group()
        index = int(found.group(2))
        text, runs[index] = runs[index], ""
        return text

    for part in message.walk():
        # The text as the parser stored it: get_payload() would hand back a text with 8-bit bytes decoded
        # by the part's charset, and setting that back would change the part.
        stored = vars(part)
        payload = stored.get("_payload")
        if isinstance(payload, str) and token in payload:
            stored["_payload"] = _TOKEN.sub(run, payload)
        if part.preamble and token in part.preamble:
            part.preamble = _TOKEN.sub(run, part.preamble)
        if part.epilogue and token in part.epilogue:
            part.epilogue = _TOKEN.sub(run, part.epilogue)
