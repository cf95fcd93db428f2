"""Charsets and header decoding, including the malformed cases real mail carries."""

from __future__ import annotations

import pytest

from gateway.message.decoding import decode_bytes, decode_header, lookup_charset, unfold


@pytest.mark.parametrize(
    ("label", "codec"),
    [
        ("UTF-8", "utf-8"),
        ("utf8", "utf-8"),
        ("GB2312", "gb18030"),
        ("iso-8859-1", "cp1252"),
        ("ks_c_5601-1987", "cp949"),
        ('"windows-1251"', "cp1251"),
        ("x-unknown", None),
        ("no-such-charset", None),
        ("base64", None),
        (None, None),
    ],
)
def test_lookup_charset(label: str | None, codec: str | None) -> None:
    assert lookup_charset(label) == codec


def test_decode_bytes_falls_back_in_order() -> None:
    assert decode_bytes("żółw".encode(), "us-ascii") == "żółw"  # mislabelled UTF-8
    assert decode_bytes("café".encode("cp1252"), "utf-8") == "café"  # mislabelled windows-1252
    assert decode_bytes(b"\x80", "iso-8859-1") == "€"  # ISO-8859-1 read as windows-1252
    assert decode_bytes("中文".encode("gb18030"), "gb2312") == "中文"
    assert decode_bytes(b"plain", "no-such-charset") == "plain"


def test_unfold_handles_every_line_end() -> None:
    assert unfold("a\r\n b\n c\r d") == "a b c d"


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        ("=?UTF-8?B?SMOpbGxv?=", "Héllo"),
        ("=?iso-8859-1?q?caf=E9_cr=E8me?=", "café crème"),
        ("=?UTF-8?Q?a?= =?UTF-8?Q?b?=", "ab"),  # whitespace between encoded words disappears
        ("=?UTF-8?Q?a?= plain =?UTF-8?Q?b?=", "a plain b"),
        ("Re: =?UTF-8?B?5pel5pys6Kqe?=", "Re: 日本語"),
        ("=?ISO-2022-JP?B?GyRCRnxLXDhsGyhC?=", "日本語"),
        ("=?gb2312?B?1tDOxA==?=", "中文"),
        # one character split across two encoded words (byte-wise), as some encoders do
        ("=?UTF-8?B?w6k=?= =?UTF-8?B?w6k=?=", "éé"),
        ("=?UTF-8?Q?=C3?= =?UTF-8?Q?=A9?=", "é"),
        ("=?UTF-8*en?Q?hello?=", "hello"),  # RFC 2231 language suffix
        ("=?UTF-8?B?SMOpbGxv?", "=?UTF-8?B?SMOpbGxv?"),  # unterminated: left as it is
        ("=?UTF-8?B?SMOpbGxv=?=", "Héllo"),  # bad padding
        ("=?utf-8?q?a?=\r\n =?utf-8?q?b?=", "ab"),  # folded
    ],
)
def test_decode_header(raw: str, text: str) -> None:
    assert decode_header(raw) == text


def test_decode_header_reads_raw_8bit() -> None:
    raw_utf8 = "Grüße".encode().decode("ascii", "surrogateescape")
    raw_latin = "Grüße".encode("cp1252").decode("ascii", "surrogateescape")
    assert decode_header(raw_utf8) == "Grüße"
    assert decode_header(raw_latin) == "Grüße"
    assert decode_header("Привет".encode("koi8-r").decode("ascii", "surrogateescape"), "koi8-r") == "Привет"
