"""The shape scan finds boundary lines after any line end the parser splits on (CRLF, LF, a lone CR)."""

from __future__ import annotations

import mmap
from pathlib import Path

from gateway.message.shape import Shape, measure

from ..contact.test_corpus import corpus_messages


def shape(mail: bytes | mmap.mmap) -> Shape:
    return measure(mail, max_parts=10**6, max_depth=10**6)


def test_a_boundary_line_after_a_lone_cr_is_found_in_a_mail_of_crlfs() -> None:
    """The fast search looks after LFs only; one CR before ``--`` is enough for the search after either."""
    mail = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n"
        b"--b\r\r\ntwo\r--b\r\n\r\nthree\r\n--b--\r\n"  # the third part's boundary line follows a lone CR
    )
    all_crlf = mail.replace(b"two\r--", b"two\r\n--")
    assert [shape(m).parts for m in (mail, all_crlf)] == [4, 4]


def test_every_corpus_mail_has_one_shape_whatever_its_line_ends() -> None:
    """CRLF, LF and lone-CR line ends give the same parts and depth: each takes its own search path."""
    compared = 0
    for name, raw in corpus_messages():
        lf = raw.replace(b"\r\n", b"\n")
        shapes = {shape(v) for v in (lf.replace(b"\n", b"\r\n"), lf, lf.replace(b"\n", b"\r"))}
        assert len(shapes) == 1, name
        compared += 1
    assert compared > 1000


def test_a_memory_map_is_scanned_from_its_start_wherever_its_position(tmp_path: Path) -> None:
    """A map's ``find`` starts at the map's position unless told otherwise: the lone CR near the start
    must still be seen when the position has moved past it."""
    mail = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r--b\r\n\r\ntwo\r\n--b--\r\n"
    path = tmp_path / "mail.eml"
    path.write_bytes(mail)
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        mapped.seek(len(mail) - 10)
        assert shape(mapped) == shape(mail) == Shape(parts=3, depth=1)
