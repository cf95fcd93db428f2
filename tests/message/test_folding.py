"""Folding base64 runs while the parser reads is invisible: the parse equals the standard library's."""

from __future__ import annotations

import base64
import itertools
import os
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from typing import cast

from hypothesis import given
from hypothesis import strategies as st

from gateway.message.folding import RUN_LINES, FoldingParser


def folded(raw: bytes, cuts: list[int]) -> Message:
    parser = FoldingParser()
    edges = [0, *sorted({cut % (len(raw) + 1) for cut in cuts}), len(raw)]
    for start, end in itertools.pairwise(edges):
        parser.feed(raw[start:end])
    return parser.close()


def reading(message: Message) -> list[object]:
    """Everything the parser keeps of each part: headers, text, preamble, epilogue and defects."""
    return [
        (
            part.items(),
            vars(part)["_payload"] if isinstance(part.get_payload(), str) else len(part.get_payload()),
            part.preamble,
            part.epilogue,
            [type(defect).__name__ for defect in part.defects],
        )
        for part in message.walk()
    ]


def base64_lines(data: bytes, width: int, end: bytes) -> bytes:
    text = base64.b64encode(data)
    return b"".join(text[at : at + width] + end for at in range(0, len(text), width))


def run_of(lines: int, width: int, end: bytes) -> bytes:
    """``lines`` lines of base64 text (the last one shorter when ``width`` is odd)."""
    size = lines * width * 3 // 4
    return base64_lines((bytes(range(256)) * (size // 256 + 1))[:size], width, end)


ENDS = st.sampled_from([b"\r\n", b"\r\n", b"\n", b"\r"])
PIECES = st.one_of(
    st.builds(run_of, st.integers(1, 2 * RUN_LINES), st.sampled_from([1, 5, 76]), ENDS),
    st.sampled_from(
        [
            b"--b\r\n",
            b"--b--\r\n",
            b"--b\n",
            b"--c--\n",
            b"\r\n",
            b"\n",
            b"\r",
            b"Content-Type: multipart/mixed; boundary=c\r\n",
            b"Content-Type: message/rfc822\r\n",
            b"Content-Type: message/delivery-status\r\n",
            b"Content-Transfer-Encoding: base64\r\n",
            b"X-Note: value\r\n",
            b" folded\r\n",
            b"From nobody\r\n",
            b"plain words here\r\n",
            b"no-line-end",
        ]
    ),
    st.binary(max_size=40),
)


@given(
    head=st.sampled_from(
        [
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n",
            b"Content-Type: text/plain\r\n\r\n",
            b"Content-Type: message/rfc822\r\n\r\n",
            b"Content-Type: multipart/report; boundary=b\r\n",
            b"",
        ]
    ),
    pieces=st.lists(PIECES, max_size=25),
    cuts=st.lists(st.integers(min_value=0, max_value=10**6), max_size=6),
)
def test_a_folded_parse_is_the_whole_parse(head: bytes, pieces: list[bytes], cuts: list[int]) -> None:
    raw = head + b"".join(pieces)
    whole = BytesParser(policy=compat32).parsebytes(raw)
    assert reading(folded(raw, cuts)) == reading(whole)


def test_a_run_is_only_looked_for_from_a_line_start() -> None:
    """Fed in two pieces that cut ``--b`` after its dashes: the boundary line's rest and the base64 lines
    after it are no run (folding them would hide the boundary from the parser)."""
    raw = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--" + b"b\r\n" + run_of(2 * RUN_LINES, 76, b"\r\n")
    )
    cut = raw.index(b"--") + 2
    assert reading(folded(raw, [cut])) == reading(BytesParser(policy=compat32).parsebytes(raw))


def test_a_part_with_8_bit_bytes_keeps_them_as_the_parser_stored_them() -> None:
    """A run in a part whose other lines hold raw UTF-8: the text goes back as the parser stored it (its
    8-bit bytes as surrogates), not as ``get_payload()`` shows it (decoded by the part's charset)."""
    numbers = b"".join(b"%d\r\n" % n for n in range(10_000, 10_000 + 2 * RUN_LINES))
    raw = (
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nBestellnummern f\xc3\xbcr Z\xc3\xbcrich:\r\n"
        + numbers
    )
    message = folded(raw, [])
    assert reading(message) == reading(BytesParser(policy=compat32).parsebytes(raw))
    assert message.get_payload(decode=True) == raw[raw.index(b"\r\n\r\n") + 4 :]


def test_long_runs_are_folded_and_put_back() -> None:
    """A run is folded (the parser sees fewer lines) and comes back byte for byte, in each place the parser
    keeps text."""
    attachment = base64_lines(os.urandom(RUN_LINES * 200), 76, b"\r\n")
    raw = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        + attachment  # the preamble
        + b"--b\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + attachment
        + b"--b\r\n\r\n"
        + attachment
        + b"GW"
        + b"0" * 32
        + b"R1 is a token of no parse of this mail\r\n"  # left as it is
        + b"--b--\r\n"
        + attachment  # the epilogue
    )
    parser = FoldingParser()
    parser.feed(raw)
    assert len(parser._runs) == 4  # one token line stood for each run
    message = parser.close()
    assert reading(message) == reading(BytesParser(policy=compat32).parsebytes(raw))
    first, second = cast(list[Message], message.get_payload())
    assert message.preamble == attachment.decode()[:-2]
    assert first.get_payload(decode=True) == base64.b64decode(attachment)
    assert cast(str, second.get_payload()).endswith("R1 is a token of no parse of this mail")
