"""The DATA reader, as a stream: the same content and the same refusal however the bytes are split.

The reference is the line-at-a-time reading the gateway used before it streamed (Postfix's
``smtpd_forbid_bare_newline = normalize``): Hypothesis builds DATA sections from hostile pieces (bare CR and
LF, dots, long lines, the end marker in all its smuggling variants), feeds them to :class:`DataDecoder` and
to the real reader over a socket in random segments, and compares with it.
"""

from __future__ import annotations

import asyncio
import itertools

from hypothesis import given
from hypothesis import strategies as st

from gateway.frontdoor.data import DataDecoder, read_data
from gateway.mail import InMemoryWriter
from gateway.replies import Replies

MAX_SIZE = 4000
MAX_LINE = 60

PIECES = st.sampled_from(
    [b"\r\n", b"\n", b"\r", b".", b"..", b".\r\n", b"\n.\n", b"\r\n.\r\n", b"\n.\r\n", b"x", b"ab", b"\0",
     b"Q" * 59, b"Q" * 61, b"\r\n.", b".x\r\n", b"\xff"]
)  # fmt: skip


def reference(stream: bytes, max_size: int, max_line: int) -> tuple[bytes, str | None, int]:
    """Line by line, as before: (content, refusal name, bytes consumed up to the end of DATA)."""
    lines: list[bytes] = []
    size = 0
    refusal: str | None = None
    after_crlf = True
    position = 0
    while True:
        end = stream.find(b"\n", position)
        if end < 0:
            raise ValueError("no end of DATA")
        line = stream[position : end + 1]
        position = end + 1
        if line == b".\r\n" and after_crlf:
            return (b"" if refusal else b"".join(lines)), refusal, position
        after_crlf = line.endswith(b"\r\n")
        content = line[:-2] if after_crlf else line[:-1]
        if content.startswith(b".") and len(content) > 1:
            content = content[1:]
        if len(content) > max_line:
            refusal = refusal or "line_too_long"
        size += len(content) + 2
        if size > max_size:
            refusal = refusal or "too_big"
        if refusal is None:
            lines.append(content + b"\r\n")


def complete(pieces: list[bytes]) -> bytes:
    return b"".join(pieces) + b"\r\n.\r\n"


def by_decoder(stream: bytes, cuts: list[int]) -> tuple[bytes, str | None]:
    """The decoder fed in the pieces ``cuts`` makes (the end found the way read_data finds it)."""
    _, _, consumed = reference(stream, MAX_SIZE, MAX_LINE)
    body = stream[: consumed - 3]  # what read_data feeds: everything before the final ".\r\n"
    decoder = DataDecoder(MAX_SIZE, MAX_LINE)
    out = []
    points = sorted({c % (len(body) + 1) for c in cuts} | {0, len(body)})
    for start, end in itertools.pairwise(points):
        out.append(decoder.feed(body[start:end]))
    return b"".join(out), decoder.refusal.name if decoder.refusal else None


@given(st.lists(PIECES, max_size=60), st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_the_decoder_agrees_with_line_at_a_time_reading(pieces: list[bytes], cuts: list[int]) -> None:
    stream = complete(pieces)
    expected, expected_refusal, _ = reference(stream, MAX_SIZE, MAX_LINE)
    content, refusal = by_decoder(stream, cuts)
    assert (refusal is None) == (expected_refusal is None)
    if refusal is None:
        assert content == expected
    elif expected_refusal != refusal:  # both limits passed: either may be named first
        assert {refusal, expected_refusal} == {"line_too_long", "too_big"}


async def read_over_a_socket(stream: bytes, segment: int) -> tuple[bytes, str | None, bytes]:
    """read_data on a real connection, the client writing ``segment`` bytes at a time; what follows the
    end of DATA must still be in the reader."""
    received: asyncio.Future[tuple[bytes, str | None, bytes]] = asyncio.get_running_loop().create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        mail = InMemoryWriter()
        result = await read_data(reader, mail, max_size=MAX_SIZE, max_line=MAX_LINE)
        after = await reader.readexactly(6)
        refusal = result.refusal.name if result.refusal else None
        received.set_result((mail.close().read(), refusal, after))
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, limit=MAX_LINE + 2)
    port = server.sockets[0].getsockname()[1]
    _, client = await asyncio.open_connection("127.0.0.1", port)
    data = stream + b"QUIT\r\n"
    for start in range(0, len(data), segment):
        client.write(data[start : start + segment])
        await client.drain()
    result = await asyncio.wait_for(received, 10)
    client.close()
    server.close()
    await server.wait_closed()
    return result


@given(st.lists(PIECES, max_size=40), st.integers(min_value=1, max_value=200))
async def test_over_a_socket_in_any_segments(pieces: list[bytes], segment: int) -> None:
    stream = complete(pieces)
    expected, expected_refusal, consumed = reference(stream, MAX_SIZE, MAX_LINE)
    content, refusal, after = await read_over_a_socket(stream, segment)
    assert after == (stream + b"QUIT\r\n")[consumed : consumed + 6]  # nothing read past the end of DATA
    assert (refusal is None) == (expected_refusal is None)
    if refusal is None:
        assert content == expected


def test_smuggling_variants_are_content() -> None:
    decoder = DataDecoder(MAX_SIZE, 1000)
    assert decoder.feed(b"a\n.\nb\n.\r\nc\r\n") == b"a\r\n.\r\nb\r\n.\r\nc\r\n"


def test_a_line_too_long_is_refused_as_it_streams_and_nothing_more_comes_out() -> None:
    decoder = DataDecoder(10**9, 100)
    assert decoder.feed(b"ok\r\n" + b"x" * 50) == b"ok\r\n"
    assert decoder.feed(b"x" * 60) == b""  # 110 bytes without a line end: refused already
    assert decoder.refusal == Replies.LINE_TOO_LONG.format(limit=100)
    assert decoder.feed(b"x\r\nfine\r\n") == b""


def test_forty_megabytes_of_two_byte_lines() -> None:
    """20 million lines, fed as a socket delivers them (64 KiB pieces cut mid-line): each piece costs a few
    C-level passes, not a Python step per line, and the content is the input, unchanged."""
    stream = b"ab\r\n" * (10 * 1024 * 1024)
    decoder = DataDecoder(50 * 1024 * 1024, 1000)
    out = bytearray()
    for start in range(0, len(stream), 65536):
        out += decoder.feed(stream[start : start + 65536])
    assert decoder.refusal is None
    assert out == stream
