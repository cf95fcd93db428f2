"""Reading a mail (parse and fit) off the event loop, in processes that can be killed when a mail runs away.

The standard library's MIME parser is pure Python and CPU-bound: on the event loop, one hostile mail would
stall every session for as long as it takes. So mails are read in a small pool of worker processes
(:mod:`.processes`, each a fresh interpreter that imports only the parser), each
capped in memory (``RLIMIT_AS``) and each mail in time (``budget``): a mail that takes longer, or makes
its process die, is killed with it and reported :class:`~gateway.errors.UnreadableError`, and the
process is replaced. The worker is handed where the mail is (its file), never the bytes of a large one,
and hands back the fitted mail with every large attachment's body in a file beside the spool, so that
the uploads stream from disk and no process ever holds all of a mail's attachments at once.
"""

from __future__ import annotations

import io
import resource
import secrets
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO, TypeVar

from gateway.contact import contract
from gateway.contact.fitting import FittedMail, fit_mail
from gateway.delivery.processes import ProcessDied, ProcessPool, UnreadableAnswer
from gateway.errors import UnreadableError
from gateway.mail import FileContent, MailContent
from gateway.message.mime import ParsedMail, parse_mail
from gateway.settings import ContentPolicy
from gateway.trust.infected import without_infected
from gateway.trust.results import InfectedFile

__all__ = ["Body", "MailReader", "MailSource", "ReadMail", "read_here"]

T = TypeVar("T")
SPILL_BYTES = 64 * 1024  # an attachment larger than this comes back as a file, not as bytes
TASKS_PER_PROCESS = 500  # then the process is replaced: whatever it fragmented is given back


@dataclass(frozen=True, slots=True)
class Body:
    """An attachment's decoded bytes: small ones in memory, large ones in a file (a :class:`Blob`)."""

    size: int
    data: bytes | None = None
    path: Path | None = None

    def open(self) -> BinaryIO:
        if self.path is not None:
            return open(self.path, "rb")
        return io.BytesIO(self.data or b"")


@dataclass(frozen=True)
class ReadMail:
    """A fitted mail whose attachments' bytes are in :attr:`bodies` (in the same order), not in it."""

    fitted: FittedMail
    bodies: tuple[Body, ...]

    def discard(self) -> None:
        """The files the bodies were written to: gone once the delivery attempt is over."""
        for body in self.bodies:
            if body.path is not None:
                body.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class MailSource:
    """Where a worker process finds a mail: its file, or (a small mail, at most ``SMALL_MAIL_BYTES``:
    cheaper to send through the pipe than to look up again) its bytes."""

    path: Path | None = None
    data: bytes | None = None

    @classmethod
    def of(cls, content: MailContent) -> MailSource:
        if isinstance(content, FileContent):
            return cls(path=content.path)
        return cls(data=content.read())

    def open(self) -> BinaryIO:
        """The mail's bytes to read in chunks: a large mail's file is never read whole."""
        if self.path is not None:
            return open(self.path, "rb")
        return io.BytesIO(self.data or b"")


def read_here(
    raw: bytes | BinaryIO,
    policy: ContentPolicy,
    workdir: Path | None = None,
    *,
    received: bool = True,
    infected: Sequence[InfectedFile] = (),
) -> ReadMail:
    """Parse and fit, in this process: a worker's task (the spool's file, read in chunks), and ``mail-gateway
    parse``'s (``received=False``: a file keeps its line ends as the file has them). ``infected``: files the
    virus scan found, left out and named in the contact."""
    parsed, left_out = without_infected(parse_mail(raw, received=received), infected)
    fitted = fit_mail(parsed, policy)
    if left_out:
        fitted = replace(fitted, omissions=fitted.omissions + left_out)
    bodies = tuple(_body(attachment.data, workdir) for attachment in fitted.attachments)
    mail = replace(fitted.mail, attachments=tuple(replace(a, data=b"") for a in fitted.mail.attachments))
    attachments = tuple(replace(a, data=b"") for a in fitted.attachments)
    return ReadMail(replace(fitted, mail=mail, attachments=attachments), bodies)


def _body(data: bytes, workdir: Path | None) -> Body:
    if workdir is None or len(data) <= SPILL_BYTES:
        return Body(len(data), data=data)
    path = workdir / f"{secrets.token_hex(12)}.part"
    path.write_bytes(data)
    return Body(len(data), path=path)


def _in_worker(
    source: MailSource,
    policy: ContentPolicy,
    limits: contract.Limits,
    workdir: Path,
    infected: Sequence[InfectedFile],
) -> ReadMail:
    contract.adopt(limits)  # the parent read them from botocore's model: no need to load it here
    with source.open() as raw:
        return read_here(raw, policy, workdir, infected=infected)


def _parse_in_worker(source: MailSource) -> ParsedMail:
    with source.open() as raw:
        return parse_mail(raw, received=True)


def _limit_memory(limit: int) -> None:
    """In each worker process, before any mail: a mail that would need more fails there, not here."""
    if limit > 0:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


class MailReader:
    """The pool of reading processes; ``await read(source)`` is the one way a mail gets read."""

    def __init__(
        self,
        policy: ContentPolicy,
        workdir: Path,
        *,
        processes: int = 1,
        budget: float = 60.0,
        memory_limit: int = 0,
    ) -> None:
        self._policy = policy
        self._workdir = workdir
        self._budget = budget
        self._pool = ProcessPool(
            processes,
            initializer=_limit_memory,
            initargs=(memory_limit,),
            max_tasks=TASKS_PER_PROCESS,
        )

    def start(self) -> None:
        """Start the first reader process now, in the background and off the event loop: an interpreter
        that imports the parser takes a fraction of a second to start, which would stall every session at
        the first mail read (the others start when mails wait for a reader)."""
        self._pool.start()

    async def read(self, source: MailSource, infected: Sequence[InfectedFile] = ()) -> ReadMail:
        """The read mail; :class:`~gateway.errors.UnreadableError` when it cannot be read within its budget
        (or kills its reader): reading it again would end the same way."""
        arguments = (source, self._policy, contract.limits(), self._workdir, tuple(infected))
        return await self._run(_in_worker, arguments)

    async def parse(self, content: MailContent) -> ParsedMail:
        """The parsed mail with every file's bytes (the virus scan's), read the same way."""
        return await self._run(_parse_in_worker, (MailSource.of(content),))

    async def _run(self, task: Callable[..., T], arguments: tuple[object, ...]) -> T:
        self.start()
        try:
            return await self._pool.run(task, arguments, self._budget)
        except TimeoutError:
            raise UnreadableError(f"reading it took longer than {self._budget:g} seconds") from None
        except ProcessDied as error:
            raise UnreadableError(f"its reader died reading it (exit code {error.exitcode})") from None
        except UnreadableAnswer as error:
            raise UnreadableError(f"its reader's answer could not be read ({error})") from None
        except (RecursionError, MemoryError) as error:
            raise UnreadableError(f"reading it exhausted the reader: {type(error).__name__}") from None

    def close(self) -> None:
        self._pool.close()

    @staticmethod
    def clean(workdir: Path) -> None:
        """At start: bodies left by a process that stopped mid-delivery."""
        if workdir.exists():
            shutil.rmtree(workdir)
        workdir.mkdir(parents=True)
