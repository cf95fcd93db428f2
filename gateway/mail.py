"""The mail as every stage names it: what the front door received, where it goes, and who takes it.

:class:`ReceivedMail` is the envelope (sender, recipients, the :class:`Target` each recipient was routed to
at RCPT time) and the content as received. The content is a :class:`MailContent`, a source of bytes the
stages read as they need (the header section, or the whole mail): in memory today, a spool file or an S3
object where the mail is kept there, without any stage changing. A :class:`MailSink` takes the mail at
the end of DATA and answers the reply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gateway.replies import Reply
from gateway.settings import RouteSettings

__all__ = ["InMemoryContent", "MailContent", "MailSink", "ReceivedMail", "Target"]


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


class MailContent(Protocol):
    """The bytes of a mail exactly as received (CRLF line ends, dot-stuffing removed)."""

    @property
    def size(self) -> int: ...

    def head(self, limit: int) -> bytes:
        """At most the first ``limit`` bytes: the header section, without reading the rest."""
        ...

    def read(self) -> bytes:
        """The whole mail, for the readers that need all of it (the MIME parser, the spool)."""
        ...


@dataclass(frozen=True, slots=True)
class InMemoryContent:
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    def head(self, limit: int) -> bytes:
        return self.data[:limit]

    def read(self) -> bytes:
        return self.data


@dataclass(frozen=True)
class ReceivedMail:
    """A mail as the DATA command ends: envelope, routing decided at RCPT, and the content as received."""

    sender: str  # "" for the null sender
    recipients: tuple[str, ...]
    targets: tuple[Target, ...]
    content: MailContent
    peer: str
    helo: str


class MailSink(Protocol):
    def room_for(self, size: int) -> Reply | None:
        """A refusal when a mail of ``size`` bytes could not be kept now (asked at MAIL FROM)."""
        ...

    async def accept(self, mail: ReceivedMail) -> Reply:
        """Take responsibility for the mail (or not) and return the reply to DATA."""
        ...

    async def park(self, mail: ReceivedMail) -> Reply:
        """Keep an automatic mail without delivering it (the ``drop`` policy): counted, inspectable."""
        ...
