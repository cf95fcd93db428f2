"""The mail as every stage names it: what the front door received, where it goes, and who takes it.

:class:`ReceivedMail` is the envelope (sender, recipients, the :class:`Target` each recipient was routed to
at RCPT time) and the content as received. The content is a :class:`MailContent`, a source of bytes the
stages read as they need (the header section, or the whole mail): in memory for a small mail, a spool
file for a large one (or an S3 object where the mail is kept there), without any stage changing. A
:class:`MailSink` gives the front door a :class:`MailWriter` for the bytes as they arrive, takes the mail
at the end of DATA and answers the reply.
"""

from __future__ import annotations

import io
import json
import mmap
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from gateway.replies import Reply
from gateway.settings import RouteSettings

__all__ = [
    "Blob",
    "FileContent",
    "InMemoryContent",
    "InMemoryWriter",
    "MailContent",
    "MailSink",
    "MailWriter",
    "ReceivedMail",
    "Target",
    "route_json",
]


@dataclass(frozen=True, slots=True)
class Target:
    """One contact to create: a route and the Connect address the mail is for."""

    route: RouteSettings
    destination: str
    tag: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        """Recipients with the same key get one contact between them (Connect would merge them anyway)."""
        return self.route.instance_id, self.destination.casefold()


_route_texts: dict[int, tuple[RouteSettings, str]] = {}


def route_json(route: RouteSettings) -> str:
    """A route as stored beside a queued mail. Computed once per route object (``asdict`` copies deeply:
    per mail it was the spool thread's largest cost); kept by identity because a route with mappings
    cannot be hashed, and the object is held so that its id cannot be reused while cached."""
    cached = _route_texts.get(id(route))
    if cached is not None and cached[0] is route:
        return cached[1]
    if len(_route_texts) >= 1024:  # routes of configurations reloaded many times: start again
        _route_texts.clear()
    text = json.dumps(asdict(route), sort_keys=True)
    _route_texts[id(route)] = (route, text)
    return text


class Blob(Protocol):
    """Bytes of a known size that can be read as a stream: a mail, or an attachment's body (in memory, or
    in a file), so that an upload never needs them all in memory."""

    @property
    def size(self) -> int: ...

    def open(self) -> BinaryIO:
        """A fresh binary stream over the bytes, from the start; the caller closes it."""
        ...


class MailContent(Blob, Protocol):
    """The bytes of a mail exactly as received (CRLF line ends, dot-stuffing removed)."""

    def head(self, limit: int) -> bytes:
        """At most the first ``limit`` bytes: the header section, without reading the rest."""
        ...

    def read(self) -> bytes:
        """The whole mail, for the readers that need all of it (the MIME parser, the spool)."""
        ...

    def view(self) -> AbstractContextManager[bytes | mmap.mmap]:
        """The whole mail without a copy (a memory map of its file), for readers that scan it."""
        ...


@dataclass(frozen=True, slots=True)
class InMemoryContent:
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    def head(self, limit: int) -> bytes:
        return self.data[:limit]

    def open(self) -> BinaryIO:
        return io.BytesIO(self.data)

    def read(self) -> bytes:
        return self.data

    def view(self) -> AbstractContextManager[bytes | mmap.mmap]:
        return nullcontext(self.data)


@dataclass(frozen=True, slots=True)
class FileContent:
    """A mail kept in a file (a large one, in the spool): read when a stage asks, never held for long."""

    path: Path
    size: int

    def head(self, limit: int) -> bytes:
        with open(self.path, "rb") as file:
            return file.read(limit)

    def open(self) -> BinaryIO:
        return open(self.path, "rb")

    def read(self) -> bytes:
        return self.path.read_bytes()

    def view(self) -> AbstractContextManager[bytes | mmap.mmap]:
        return _mapped(self.path, self.size)


@contextmanager
def _mapped(path: Path, size: int) -> Iterator[bytes | mmap.mmap]:
    if size == 0:  # an empty file cannot be mapped
        yield b""
        return
    with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        yield mapped


class MailWriter(Protocol):
    """Where the front door puts a mail's bytes as they arrive."""

    def write(self, data: bytes) -> None: ...

    def close(self) -> MailContent:
        """All bytes are in: the content, wherever the writer kept it."""
        ...

    def discard(self) -> None:
        """The mail was refused or cut short: keep nothing."""
        ...


class InMemoryWriter:
    """Keeps the bytes in memory (tests, and the gateway's own small mails)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self._parts.append(data)

    def close(self) -> MailContent:
        return InMemoryContent(b"".join(self._parts))

    def discard(self) -> None:
        self._parts.clear()


@dataclass(frozen=True)
class ReceivedMail:
    """A mail as the DATA command ends: envelope, routing decided at RCPT, and the content as received."""

    sender: str  # "" for the null sender
    recipients: tuple[str, ...]
    targets: tuple[Target, ...]
    content: MailContent
    peer: str
    helo: str
    # What the trust checks found (gateway.trust.results.TrustResult as JSON): kept beside the bytes, never
    # written into them, so that the ClientToken stays the digest of the bytes received.
    verdicts: str | None = None
    # The header's Message-ID as the front door's triage read it (for listings and logs; None: it has none)
    # when ``message_id_known``; else not read yet, and whoever needs it reads the header.
    message_id: str | None = None
    message_id_known: bool = False


class MailSink(Protocol):
    def writer(self) -> MailWriter:
        """Where the bytes of the next mail go while they arrive."""
        ...

    def room_for(self, size: int) -> Reply | None:
        """A refusal when a mail of ``size`` bytes could not be kept now (asked at MAIL FROM)."""
        ...

    async def accept(self, mail: ReceivedMail) -> Reply:
        """Take responsibility for the mail (or not) and return the reply to DATA."""
        ...

    async def park(self, mail: ReceivedMail) -> Reply:
        """Keep an automatic mail without delivering it (the ``drop`` policy): counted, inspectable."""
        ...
