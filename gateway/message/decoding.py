"""Bytes and header text of real-world mail into clean Unicode: charsets, RFC 2047 encoded words, raw 8-bit.

Pure functions that never raise on bad input: a wrong charset label, a broken encoded word or invalid
base64 degrade to the best reading available, so that everything reaching Connect is valid UTF-8.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import functools
import quopri
import re
from collections.abc import Iterator

__all__ = ["address_list", "decode_bytes", "decode_header", "lookup_charset", "unfold"]

# Labels that mail software writes but that mean a larger or different charset in practice (the same
# choices browsers make, WHATWG Encoding Standard): decoding with the superset loses nothing.
_ALIASES = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "cn-gb": "gb18030",
    "euc-cn": "gb18030",
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "iso8859-1": "cp1252",
    "us-ascii": "cp1252",
    "ascii": "cp1252",
    "ansi_x3.4-1968": "cp1252",
    "iso-8859-9": "cp1254",
    "iso-8859-11": "cp874",
    "tis-620": "cp874",
    "windows-874": "cp874",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "euc-kr": "cp949",
    "x-windows-949": "cp949",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "windows-31j": "cp932",
    "iso-2022-jp": "iso2022_jp_ext",
    "csiso2022jp": "iso2022_jp_ext",
    "big5": "big5hkscs",
    "x-big5": "big5hkscs",
    "iso-8859-8-i": "iso8859_8",
    "utf8": "utf-8",
    "unicode-1-1-utf-7": "utf-7",
    "x-unknown": "",
    "unknown-8bit": "",
    "unknown": "",
    "x-user-defined": "",
    "default": "",
}

_FALLBACKS = ("utf-8", "cp1252")


@functools.lru_cache(maxsize=256)
def lookup_charset(label: str | None) -> str | None:
    """The Python codec for a charset label as mail writes it, or None when it names nothing usable."""
    if not label:
        return None
    name = label.strip().strip("\"'").lower()
    name = _ALIASES.get(name, name)
    if not name:
        return None
    try:
        info = codecs.lookup(name)
    except LookupError:
        return None
    # Text codecs only: 'base64', 'rot13', 'zip' and friends are not charsets.
    return info.name if getattr(info, "_is_text_encoding", True) else None


_MULTIBYTE = (
    "utf-16",
    "utf-32",
    "utf-7",
    "iso2022",
    "gb",
    "big5",
    "cp932",
    "cp949",
    "cp950",
    "euc",
    "shift",
    "hz",
)


def decode_bytes(data: bytes, charset: str | None = None) -> str:
    """Text from bytes, never raising: the declared charset if it fits, else UTF-8, else windows-1252.

    A single-byte label (ISO-8859-x, windows-125x, KOI8...) is tried after UTF-8: mail labelled Latin-1
    but written in UTF-8 is common, while Latin-1 text that happens to be valid UTF-8 is vanishingly rare.
    """
    declared = lookup_charset(charset)
    candidates = [declared] if declared else []
    if declared and not declared.startswith(_MULTIBYTE):
        candidates.insert(0, "utf-8")
    candidates += [c for c in _FALLBACKS if c not in candidates]
    for codec in candidates:
        try:
            return data.decode(codec)
        except (UnicodeDecodeError, LookupError):
            continue
    return data.decode(declared or "utf-8", errors="replace")


def unfold(value: str) -> str:
    """Header unfolding (RFC 5322 §2.2.3), for CRLF, bare LF and bare CR line ends alike."""
    return re.sub(r"\r\n|\r|\n", "", value)


_ENCODED_WORD = re.compile(
    r"=\?(?P<charset>[^?\s*]+)(?:\*[^?\s]*)?\?(?P<encoding>[bBqQ])\?(?P<text>.*?)\?=",
    re.DOTALL,
)
_BETWEEN_WORDS = re.compile(r"\s*")


def decode_header(value: str, fallback_charset: str | None = None) -> str:
    """A header value as a human reads it: unfolded, RFC 2047 words decoded, raw 8-bit bytes decoded.

    ``value`` is what the parser stored: raw 8-bit bytes appear as surrogate escapes. Adjacent encoded
    words in one charset are joined before decoding, so a character split across two words survives.
    """
    text = unfold(value)
    if _has_surrogates(text):
        text = decode_bytes(text.encode("ascii", "surrogateescape"), fallback_charset)
    if "=?" not in text:
        return text
    pieces: list[str] = []
    pending: list[tuple[str | None, bytes]] = []  # run of adjacent encoded words
    position = 0
    for word in _ENCODED_WORD.finditer(text):
        gap = text[position : word.start()]
        if not (pending and _BETWEEN_WORDS.fullmatch(gap)):
            pieces.append(_flush(pending))
            pieces.append(gap)
        pending.append((word["charset"], _word_bytes(word["encoding"], word["text"])))
        position = word.end()
    pieces.append(_flush(pending))
    pieces.append(text[position:])
    return "".join(pieces)


def _flush(pending: list[tuple[str | None, bytes]]) -> str:
    """Decode a run of encoded words, joining the bytes of neighbours that share a charset."""
    out: list[str] = []
    charset: str | None = None
    chunk = b""
    for word_charset, data in pending:
        if chunk and word_charset != charset:
            out.append(decode_bytes(chunk, charset))
            chunk = b""
        charset = word_charset
        chunk += data
    if chunk:
        out.append(decode_bytes(chunk, charset))
    pending.clear()
    return "".join(out)


def _word_bytes(encoding: str, text: str) -> bytes:
    raw = text.encode("ascii", "surrogateescape")
    if encoding in "qQ":
        return quopri.decodestring(raw.replace(b"_", b" "), header=False)
    return _lenient_b64decode(raw)


def _lenient_b64decode(data: bytes) -> bytes:
    """Base64 from encoders that forget padding or slip in stray characters."""
    cleaned = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
    cleaned = cleaned[: len(cleaned) - len(cleaned) % 4] if len(cleaned) % 4 == 1 else cleaned
    try:
        return base64.b64decode(cleaned + b"=" * (-len(cleaned) % 4))
    except (binascii.Error, ValueError):
        return b""


def _has_surrogates(text: str) -> bool:
    return any("\udc80" <= char <= "\udcff" for char in text)


_BARE_ADDRESS = re.compile(r"[^\s<>,;:\"()\[\]]+@[^\s<>,;:\"()\[\]]+")


def _top_level_items(value: str) -> Iterator[str]:
    """Split an address list at commas and semicolons outside quotes, brackets and comments."""
    start = depth_angle = depth_comment = 0
    quoted = escaped = False
    for index, char in enumerate(value):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif quoted:
            quoted = char != '"'
        elif char == '"':
            quoted = True
        elif char == "(":
            depth_comment += 1
        elif char == ")":
            depth_comment = max(0, depth_comment - 1)
        elif depth_comment:
            continue
        elif char == "<":
            depth_angle += 1
        elif char == ">":
            depth_angle = max(0, depth_angle - 1)
        elif char in ",;" and not depth_angle:
            yield value[start:index]
            start = index + 1
    yield value[start:]


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


def address_list(value: str) -> list[tuple[str, str]]:
    """``(display name, address)`` pairs of an address header, decoded; never raises, never recurses.

    Tolerant of what real mail does: group syntax, comments as names (``a@b (Name)``), encoded words in
    names, stray brackets. Items without an address are skipped.
    """
    pairs = []
    for item in _top_level_items(unfold(value)):
        text = item.strip()
        colon, angle = text.find(":"), text.find("<")
        if colon >= 0 and (angle < 0 or colon < angle) and '"' not in text[:colon]:
            text = text[colon + 1 :].strip()  # "Group name: member" and "undisclosed-recipients:"
        if "<" in text and ">" in text:
            name = text[: text.rfind("<")]
            address = text[text.rfind("<") + 1 : text.rfind(">")]
        else:
            comments = re.findall(r"\(([^()]*)\)", text)
            address = re.sub(r"\([^()]*\)", "", text)
            name = comments[0] if comments else ""
        address = decode_header(address).strip().strip("<>").strip()
        if "@" not in address or any(c.isspace() for c in address):
            found = _BARE_ADDRESS.search(decode_header(text))
            if found is None:
                continue
            address, name = found.group(0), ""
        pairs.append((decode_header(_unquote(name)).strip(), address))
    return pairs
