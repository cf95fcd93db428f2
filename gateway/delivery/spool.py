"""The spool: every mail the gateway has answered 250 for, kept durably until Connect has it.

One SQLite database under ``[queue] path`` in WAL mode with ``synchronous=FULL``: a mail and its targets
are written in one transaction that is on disk before the 250 goes out. A small mail's bytes live in its
row; a large one's in a file under ``mail/`` (written while it arrived, under ``incoming/``, then flushed
and moved there, with its directory, before that transaction): a file no row names is an orphan of a
crash and goes at the next start. A mail moves through states::

    queued ──claim──▶ active ──▶ done      (raw bytes dropped: personal data is not kept longer than needed)
      ▲                 │  └───▶ deferred ──(due)──▶ claimed again
      ├──retry──── dead ◀┘      (permanent refusal, or max_age reached)
      └──retry──── parked       (automatic mail under the "drop" policy: kept, never delivered by itself)

Each target (one contact) keeps the request built for it, so a retry resends exactly the same request and
Connect's idempotency answers with the same ContactId. Three of a mail's commits are flushed to disk: the
mail before its 250, each request before it is sent, and the mail's end; claims, lease renewals and a
target's contact are written without a flush of their own, since a power cut that lost one would only
have the stored request sent again. A claim is a lease: a mail claimed by a worker (or a process) that
died without saying so is claimable again, and deletable, once its lease has run out.
Safe to use beside a running gateway: the operator commands use their own connection and SQLite's
locking; a mail being delivered cannot be deleted.
The ``thread`` table remembers which Message-ID became which contact, for ``RelatedContactId``.

The schema has a version (``PRAGMA user_version``); a spool written by an older gateway is brought up to
date when it is opened, in one transaction per step (:data:`MIGRATIONS`). SQLite's errors become the
gateway's own here, at the spool's boundary: :class:`~gateway.errors.SpoolFullError` for a full disk,
:class:`~gateway.errors.SpoolError` for the rest.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, cast

from gateway.errors import DeliveryError, SpoolError, SpoolFullError
from gateway.mail import FileContent, InMemoryContent, MailContent, ReceivedMail, Target, route_json
from gateway.message.mime import received_message_id
from gateway.replies import Reply
from gateway.settings import RouteSettings

if TYPE_CHECKING:
    from types_aiobotocore_connect.type_defs import StartEmailContactRequestTypeDef

__all__ = [
    "SCHEMA_VERSION",
    "THREAD_DAYS",
    "MailState",
    "Notice",
    "QueuedMail",
    "QueuedTarget",
    "Spool",
    "SpoolBusyError",
    "TargetState",
]

DATABASE = "spool.sqlite3"
INCOMING = "incoming"  # mails still arriving (SpillingWriter's files)
STORED = "mail"  # large mails' bytes, one file per mail, named by its row
LEASE_SECONDS = 600.0  # a claim unrenewed for this long was left by a worker that is gone
THREAD_DAYS = 90  # Connect links replies within 90 days
THREAD_MAX_ROWS = 1_000_000
DONE_RETENTION_SECONDS = 86400


class MailState(StrEnum):
    QUEUED = "queued"
    ACTIVE = "active"  # claimed by a worker
    DEFERRED = "deferred"  # waiting for its next attempt
    DEAD = "dead"  # given up: the dead-letter area
    PARKED = "parked"  # automatic mail under the "drop" policy
    DONE = "done"


class TargetState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # refused for good


class Notice(StrEnum):
    """What became of the delivery status notification of a dead mail."""

    SENT = "sent"
    FAILED = "failed"  # tried later again
    UNSENT = "unsent: no smarthost"
    NOT_NEEDED = "not needed: null sender"


STATES = tuple(MailState)

# The schema of version 0.1, the first; later versions are reached through MIGRATIONS.
_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS mail (
    id TEXT PRIMARY KEY,
    received_at REAL NOT NULL,
    sender TEXT NOT NULL,
    recipients TEXT NOT NULL,
    message_id TEXT,
    size INTEGER NOT NULL,
    raw BLOB,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    notice TEXT
);
CREATE INDEX IF NOT EXISTS mail_due ON mail (state, next_attempt_at);
CREATE TABLE IF NOT EXISTS target (
    mail_id TEXT NOT NULL REFERENCES mail (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    route TEXT NOT NULL,
    destination TEXT NOT NULL,
    tag TEXT,
    recipients TEXT NOT NULL,
    request TEXT,
    built_at REAL,
    contact_id TEXT,
    state TEXT NOT NULL,
    error TEXT,
    reply TEXT,
    PRIMARY KEY (mail_id, position)
);
CREATE TABLE IF NOT EXISTS thread (
    instance_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    contact_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (instance_id, message_id)
);
CREATE INDEX IF NOT EXISTS thread_age ON thread (created_at);
"""


def _split_replies(db: sqlite3.Connection) -> None:
    """2: a refused target's reply as its code, enhanced status and text (it was one string)."""
    for column in ("error_service TEXT", "error_code TEXT", "reply_code INTEGER", "reply_status TEXT"):
        db.execute(f"ALTER TABLE target ADD COLUMN {column}")
    db.execute("ALTER TABLE target ADD COLUMN reply_text TEXT")
    rows = db.execute("SELECT mail_id, position, reply FROM target WHERE reply IS NOT NULL").fetchall()
    for mail_id, position, reply in rows:
        code, _, rest = str(reply).partition(" ")
        status, _, text = rest.partition(" ")
        db.execute(
            "UPDATE target SET reply_code = ?, reply_status = ?, reply_text = ?"
            " WHERE mail_id = ? AND position = ?",
            (int(code) if code.isdigit() else 554, status or "5.0.0", text, mail_id, position),
        )
    db.execute("ALTER TABLE target DROP COLUMN reply")


def _files_leases_failures(db: sqlite3.Connection) -> None:
    """3: large mails in files, claims with a lease, and a count of unexpected failures (poison mail)."""
    db.execute("ALTER TABLE mail ADD COLUMN path TEXT")
    db.execute("ALTER TABLE mail ADD COLUMN lease_until REAL")
    db.execute("ALTER TABLE mail ADD COLUMN failures INTEGER NOT NULL DEFAULT 0")


def _verdicts(db: sqlite3.Connection) -> None:
    """4: what the trust checks found at DATA (JSON), kept beside the mail's bytes, never in them."""
    db.execute("ALTER TABLE mail ADD COLUMN verdicts TEXT")


SCHEMA_VERSION = 4
# Each step takes the schema from its version to the next, in one transaction.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _split_replies,
    2: _files_leases_failures,
    3: _verdicts,
}


_MAIL_COLUMNS = (
    "id, received_at, sender, recipients, message_id, size, state, attempts, next_attempt_at, last_error,"
    " notice, path, lease_until, failures, verdicts"
)


class SpoolBusyError(Exception):
    """An operator command on a mail that a worker is delivering right now."""


@contextmanager
def _boundary() -> Iterator[None]:
    """SQLite's errors (and the disk's) become the gateway's own."""
    try:
        yield
    except sqlite3.Error as error:
        if (getattr(error, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_FULL:
            raise SpoolFullError(f"the spool's disk is full: {error}") from error
        raise SpoolError(f"the spool could not be used: {error}") from error
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise SpoolFullError(f"the spool's disk is full: {error}") from error
        raise SpoolError(f"the spool could not be used: {error}") from error


@dataclass(frozen=True)
class QueuedTarget:
    position: int
    target: Target
    recipients: tuple[str, ...]
    state: TargetState
    request: StartEmailContactRequestTypeDef | None = None
    built_at: float | None = None
    contact_id: str | None = None
    error: str | None = None  # the whole text, for the operator (it may echo personal data)
    error_service: str | None = None
    error_code: str | None = None
    reply: Reply | None = None  # what the sender's notification says of a refused target


@dataclass(frozen=True)
class QueuedMail:
    id: str
    received_at: float
    sender: str
    recipients: tuple[str, ...]
    message_id: str | None
    size: int
    state: MailState
    attempts: int
    next_attempt_at: float
    last_error: str | None
    notice: str | None
    targets: tuple[QueuedTarget, ...]
    content: MailContent | None = None  # asked for, and not yet dropped (done)
    lease_until: float | None = None
    failures: int = 0  # unexpected exceptions while delivering it: a mail that keeps causing them is poison
    verdicts: str | None = None  # the trust checks' result at DATA (gateway.trust.results.TrustResult, JSON)

    @property
    def pending(self) -> list[QueuedTarget]:
        return [t for t in self.targets if t.state == TargetState.PENDING]


def new_id(now: float) -> str:
    """Sortable by arrival, unique, short: milliseconds in hex plus 24 random bits."""
    return f"{int(now * 1000):012x}{secrets.token_hex(3)}"


def _route(text: str) -> RouteSettings:
    return RouteSettings(**json.loads(text))


def _request(text: str | None) -> StartEmailContactRequestTypeDef | None:
    """A stored request, as the gateway built it (the spool holds nothing else in that column)."""
    return cast("StartEmailContactRequestTypeDef", json.loads(text)) if text else None


def _abandoned(row: sqlite3.Row, now: float) -> bool:
    """An active mail whose claim ran out: its worker (or its whole process) is gone."""
    return bool(row["state"] == "active" and (row["lease_until"] is None or row["lease_until"] < now))


def _sync_directory(path: Path) -> None:
    """A file moved into ``path`` survives a power cut only once the directory itself is on disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class Spool:
    """Synchronous, one connection; the gateway runs it in a single worker thread (see :mod:`.queue`)."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        if create:
            path.mkdir(parents=True, exist_ok=True)
        elif not (path / DATABASE).exists():
            raise FileNotFoundError(f"no spool at {path}")
        with _boundary():
            if create:
                for directory in (INCOMING, STORED):
                    (path / directory).mkdir(exist_ok=True)
            self._db = sqlite3.connect(path / DATABASE, isolation_level=None, check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            self._synchronous = "FULL"
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.execute("PRAGMA busy_timeout = 10000")
        self._migrate()

    def _migrate(self) -> None:
        """Create the schema, or bring a spool written by an older gateway up to :data:`SCHEMA_VERSION`
        (a step at a time, each in its own transaction: a gateway and an operator command may both try)."""
        while True:
            with self._transaction() as db:
                version = int(db.execute("PRAGMA user_version").fetchone()[0])
                if version == SCHEMA_VERSION:
                    return
                if version > SCHEMA_VERSION:
                    raise SpoolError(
                        f"the spool at {self.path} was written by a newer gateway (schema {version})"
                    )
                if version == 0:  # a new spool, or one written by 0.1, which had no version
                    for statement in _SCHEMA_V1.split(";"):
                        if statement.strip():
                            db.execute(statement)
                else:
                    MIGRATIONS[version](db)
                db.execute(f"PRAGMA user_version = {version + 1}")

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """A write. ``durable=False``: committed without its own disk flush (the next durable commit
        flushes it too, the write-ahead log being one file in order); a process crash still loses
        nothing committed, only a power loss can, and only where losing it is harmless."""
        with _boundary():
            # Set before each write that needs another level: a durable write never begins at NORMAL,
            # whatever became of the one before it.
            level = "FULL" if durable else "NORMAL"
            if self._synchronous != level:
                self._db.execute(f"PRAGMA synchronous = {level}")
                self._synchronous = level
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                # A failed COMMIT (a full disk) leaves the transaction open, and a failed statement may have
                # ended it already: roll back whatever is still open, so the next write can begin.
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def _rows(self, sql: str, parameters: Sequence[object] = ()) -> list[sqlite3.Row]:
        """A read, outside any transaction (WAL: it never waits for a writer)."""
        with _boundary():
            return self._db.execute(sql, parameters).fetchall()

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.path).free

    @property
    def incoming(self) -> Path:
        """Where mails are written while they arrive (on the spool's file system: moved, never copied)."""
        return self.path / INCOMING

    # -- the gateway's side -------------------------------------------------------------------------

    def put(self, mail: ReceivedMail, now: float | None = None, state: MailState = MailState.QUEUED) -> str:
        """Store a mail and its targets; durable when this returns. ``parked``: kept, not delivered."""
        return self.put_many([mail], now, state)[0]

    def put_many(
        self, mails: Sequence[ReceivedMail], now: float | None = None, state: MailState = MailState.QUEUED
    ) -> list[str]:
        """Store several mails in one transaction (one disk flush for all: group commit). A large mail's
        file is flushed and moved under ``mail/`` first, with the directory, so that the row never names a
        file the disk does not hold."""
        now = time.time() if now is None else now
        ids = [new_id(now) for _ in mails]
        with _boundary():
            # What the rows need of the bytes is read before the files move.
            message_ids = [received_message_id(mail) for mail in mails]
            paths = [
                self._keep_file(queue_id, mail.content) for queue_id, mail in zip(ids, mails, strict=True)
            ]
            if any(paths):
                _sync_directory(self.path / STORED)
        with self._transaction() as db:
            for queue_id, mail, path, message_id in zip(ids, mails, paths, message_ids, strict=True):
                content = mail.content
                raw = None if path else content.read()
                groups: dict[tuple[str, str], tuple[Target, list[str]]] = {}
                for recipient, target in zip(mail.recipients, mail.targets, strict=True):
                    groups.setdefault(target.key, (target, []))[1].append(recipient)
                db.execute(
                    "INSERT INTO mail (id, received_at, sender, recipients, message_id, size, raw, path,"
                    " state, next_attempt_at, verdicts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        queue_id, now, mail.sender, json.dumps(mail.recipients), message_id, content.size,
                        raw, path, state, now, mail.verdicts,
                    ),
                )  # fmt: skip
                db.executemany(
                    "INSERT INTO target (mail_id, position, route, destination, tag, recipients, state)"
                    " VALUES (?, ?, ?, ?, ?, ?, 'pending')",
                    [
                        (queue_id, position, route_json(t.route), t.destination, t.tag, json.dumps(rcpts))
                        for position, (t, rcpts) in enumerate(groups.values())
                    ],
                )
        return ids

    def _keep_file(self, queue_id: str, content: MailContent) -> str | None:
        """A mail that arrived in a file: flushed and moved to ``mail/<id>.eml``; its path, relative."""
        if not isinstance(content, FileContent):
            return None
        relative = f"{STORED}/{queue_id}.eml"
        try:
            with open(content.path, "rb+") as file:
                os.fsync(file.fileno())
            os.replace(content.path, self.path / relative)
        except OSError as error:  # another file system (a sync-mode mail parked): copied, then flushed
            if error.errno != errno.EXDEV:
                raise
            shutil.copyfile(content.path, self.path / relative)
            with open(self.path / relative, "rb+") as file:
                os.fsync(file.fileno())
        return relative

    def _drop_file(self, relative: str | None) -> None:
        if relative:
            (self.path / relative).unlink(missing_ok=True)

    def remove_orphans(self) -> int:
        """At start: files of mails that never got their row (a crash before the 250), and mails that were
        still arriving. Their senders were not told 250: they send them again."""
        with _boundary():
            known = {row["path"] for row in self._rows("SELECT path FROM mail WHERE path IS NOT NULL")}
            orphans = [p for p in (self.path / STORED).iterdir() if f"{STORED}/{p.name}" not in known]
            orphans += list((self.path / INCOMING).iterdir())
            for orphan in orphans:
                orphan.unlink(missing_ok=True)
        return len(orphans)

    def recover(self) -> int:
        """At start: mail left active by a crash is queued again (its stored requests are kept)."""
        with self._transaction() as db:
            return db.execute(
                "UPDATE mail SET state = 'queued', lease_until = NULL WHERE state = 'active'"
            ).rowcount

    def claim(self, now: float | None = None, lease: float = LEASE_SECONDS) -> QueuedMail | None:
        """The next due mail (or one whose claim has expired), marked active for ``lease`` seconds, with
        its content; None when nothing is due."""
        now = time.time() if now is None else now
        with self._transaction(durable=False) as db:  # a claim lost to a power cut is simply made again
            row = db.execute(
                "SELECT id FROM mail WHERE (state IN ('queued', 'deferred') AND next_attempt_at <= ?)"
                " OR (state = 'active' AND lease_until < ?) ORDER BY next_attempt_at LIMIT 1",
                (now, now),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE mail SET state = 'active', lease_until = ? WHERE id = ?", (now + lease, row["id"])
            )
        return self.get(row["id"], with_content=True)

    def renew(self, mail_id: str, now: float | None = None, lease: float = LEASE_SECONDS) -> None:
        """A worker still busy with a mail says so, before its lease runs out."""
        now = time.time() if now is None else now
        with self._transaction(durable=False) as db:
            db.execute(
                "UPDATE mail SET lease_until = ? WHERE id = ? AND state = 'active'", (now + lease, mail_id)
            )

    def count_failure(self, mail_id: str) -> int:
        """An unexpected exception while delivering the mail; how many it has caused so far."""
        with self._transaction() as db:
            db.execute("UPDATE mail SET failures = failures + 1 WHERE id = ?", (mail_id,))
            row = db.execute("SELECT failures FROM mail WHERE id = ?", (mail_id,)).fetchone()
        return int(row["failures"]) if row else 0

    def next_due(self) -> float | None:
        [row] = self._rows(
            "SELECT MIN(next_attempt_at) AS due FROM mail WHERE state IN ('queued', 'deferred')"
        )
        return None if row["due"] is None else float(row["due"])

    def save_request(
        self, mail_id: str, position: int, request: StartEmailContactRequestTypeDef, built_at: float
    ) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE target SET request = ?, built_at = ? WHERE mail_id = ? AND position = ?",
                (json.dumps(request), built_at, mail_id, position),
            )

    def delivered(
        self, mail_id: str, position: int, contact_id: str | None, thread_ids: Sequence[str] = ()
    ) -> None:
        """A target became a contact; its Message-ID is remembered for the replies to come. Not flushed on
        its own (the mail's :meth:`finish` flushes it): were it lost to a power cut, the stored request
        would be sent again, and Connect answers its ClientToken with the same contact."""
        with self._transaction(durable=False) as db:
            db.execute(
                "UPDATE target SET state = 'delivered', contact_id = ?, error = NULL, error_service = NULL,"
                " error_code = NULL WHERE mail_id = ? AND position = ?",
                (contact_id, mail_id, position),
            )
            if contact_id is not None:
                route = db.execute(
                    "SELECT route FROM target WHERE mail_id = ? AND position = ?", (mail_id, position)
                ).fetchone()
                instance = _route(route["route"]).instance_id
                db.executemany(
                    "INSERT OR REPLACE INTO thread (instance_id, message_id, contact_id, created_at)"
                    " VALUES (?, ?, ?, ?)",
                    [(instance, message_id, contact_id, time.time()) for message_id in thread_ids],
                )

    def failed(self, mail_id: str, position: int, error: DeliveryError, reply: Reply | None = None) -> None:
        """A target refused for good: the error for the operator, its reply (or ``reply``) for the sender's
        notification."""
        reply = reply or error.reply
        with self._transaction() as db:
            db.execute(
                "UPDATE target SET state = 'failed', error = ?, error_service = ?, error_code = ?,"
                " reply_code = ?, reply_status = ?, reply_text = ? WHERE mail_id = ? AND position = ?",
                (
                    str(error), error.service, error.code, reply.code, reply.status, reply.text,
                    mail_id, position,
                ),
            )  # fmt: skip

    def defer(self, mail_id: str, until: float, error: str, *, attempt: bool = True) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE mail SET state = 'deferred', next_attempt_at = ?, last_error = ?, lease_until = NULL,"
                " attempts = attempts + ? WHERE id = ?",
                (until, error, 1 if attempt else 0, mail_id),
            )

    def release(self, mail_id: str) -> None:
        """Put an active mail back as it was (shutdown before its delivery finished)."""
        with self._transaction() as db:
            db.execute(
                "UPDATE mail SET state = 'queued', lease_until = NULL WHERE id = ? AND state = 'active'",
                (mail_id,),
            )

    def bury(self, mail_id: str, reason: str) -> None:
        """Into the dead-letter area, with the reason; ``queue retry`` brings it back."""
        with self._transaction() as db:
            db.execute(
                "UPDATE mail SET state = 'dead', last_error = ?, lease_until = NULL, attempts = attempts + 1"
                " WHERE id = ?",
                (reason, mail_id),
            )

    def finish(self, mail_id: str) -> None:
        """Delivered: the bytes go (personal data is not kept longer than needed); the row stays a day."""
        with self._transaction() as db:
            row = db.execute("SELECT path FROM mail WHERE id = ?", (mail_id,)).fetchone()
            db.execute(
                "UPDATE mail SET state = 'done', raw = NULL, path = NULL, last_error = NULL,"
                " lease_until = NULL WHERE id = ?",
                (mail_id,),
            )
        with _boundary():
            self._drop_file(row["path"] if row else None)

    def set_notice(self, mail_id: str, notice: Notice) -> None:
        """What became of the delivery status notification: sent, failed (retried later) or unsent."""
        with self._transaction() as db:
            db.execute("UPDATE mail SET notice = ? WHERE id = ?", (notice, mail_id))

    def awaiting_notice(self) -> list[str]:
        rows = self._rows("SELECT id FROM mail WHERE state = 'dead' AND notice = ?", (Notice.FAILED,))
        return [row["id"] for row in rows]

    def related_contact(self, instance_id: str, message_ids: Iterable[str]) -> str | None:
        """The contact of the first known message among ``message_ids`` (newest first), within 90 days."""
        oldest = time.time() - THREAD_DAYS * 86400
        for message_id in message_ids:
            rows = self._rows(
                "SELECT contact_id FROM thread WHERE instance_id = ? AND message_id = ? AND created_at >= ?",
                (instance_id, message_id, oldest),
            )
            if rows:
                return str(rows[0]["contact_id"])
        return None

    def purge(self, now: float | None = None) -> None:
        """Forget finished mail after a day, and threads after 90 days or beyond the row bound."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            db.execute(
                "DELETE FROM mail WHERE state = 'done' AND received_at < ?", (now - DONE_RETENTION_SECONDS,)
            )
            db.execute("DELETE FROM thread WHERE created_at < ?", (now - THREAD_DAYS * 86400,))
            db.execute(
                "DELETE FROM thread WHERE rowid IN"
                " (SELECT rowid FROM thread ORDER BY created_at DESC LIMIT -1 OFFSET ?)",
                (THREAD_MAX_ROWS,),
            )

    # -- reading, and the operator's side -----------------------------------------------------------

    def get(self, mail_id: str, *, with_content: bool = False) -> QueuedMail | None:
        columns = _MAIL_COLUMNS + (", raw" if with_content else "")
        found = self._rows(f"SELECT {columns} FROM mail WHERE id = ?", (mail_id,))  # noqa: S608
        if not found:
            return None
        row = found[0]
        targets = self._rows("SELECT * FROM target WHERE mail_id = ? ORDER BY position", (mail_id,))
        return QueuedMail(
            id=row["id"],
            received_at=row["received_at"],
            sender=row["sender"],
            recipients=tuple(json.loads(row["recipients"])),
            message_id=row["message_id"],
            size=row["size"],
            state=MailState(row["state"]),
            attempts=row["attempts"],
            next_attempt_at=row["next_attempt_at"],
            last_error=row["last_error"],
            notice=row["notice"],
            targets=tuple(
                QueuedTarget(
                    position=t["position"],
                    target=Target(_route(t["route"]), t["destination"], t["tag"]),
                    recipients=tuple(json.loads(t["recipients"])),
                    state=TargetState(t["state"]),
                    request=_request(t["request"]),
                    built_at=t["built_at"],
                    contact_id=t["contact_id"],
                    error=t["error"],
                    error_service=t["error_service"],
                    error_code=t["error_code"],
                    reply=Reply(t["reply_code"], t["reply_status"], t["reply_text"])
                    if t["reply_code"]
                    else None,
                )
                for t in targets
            ),
            content=self._content(row) if with_content else None,
            lease_until=row["lease_until"],
            failures=row["failures"],
            verdicts=row["verdicts"],
        )

    def _content(self, row: sqlite3.Row) -> MailContent | None:
        if row["path"]:
            return FileContent(self.path / row["path"], int(row["size"]))
        return InMemoryContent(row["raw"]) if row["raw"] is not None else None

    def counts(self) -> dict[MailState, int]:
        found = {row[0]: row[1] for row in self._rows("SELECT state, COUNT(*) FROM mail GROUP BY state")}
        return {state: int(found.get(state, 0)) for state in MailState}

    def mails(self, state: MailState | None = None, limit: int = 1000) -> list[QueuedMail]:
        if state is None:
            rows = self._rows("SELECT id FROM mail ORDER BY received_at LIMIT ?", (limit,))
        else:
            rows = self._rows(
                "SELECT id FROM mail WHERE state = ? ORDER BY received_at LIMIT ?", (state, limit)
            )
        return [mail for row in rows if (mail := self.get(row["id"])) is not None]

    def retry(self, mail_id: str, now: float | None = None) -> bool:
        """Deliver a dead, deferred or parked mail now (or one whose claim expired with its worker); its
        refused targets are rebuilt and tried again."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            row = db.execute("SELECT state, lease_until FROM mail WHERE id = ?", (mail_id,)).fetchone()
            if row is None or not (row["state"] in ("dead", "deferred", "parked") or _abandoned(row, now)):
                return False
            db.execute(
                "UPDATE target SET state = 'pending', request = NULL, built_at = NULL, error = NULL,"
                " error_service = NULL, error_code = NULL, reply_code = NULL, reply_status = NULL,"
                " reply_text = NULL WHERE mail_id = ? AND state = 'failed'",
                (mail_id,),
            )
            db.execute(
                "UPDATE mail SET state = 'queued', next_attempt_at = ?, notice = NULL, lease_until = NULL,"
                " failures = 0 WHERE id = ?",
                (now, mail_id),
            )
        return True

    def retry_dead(self) -> list[str]:
        ids = [row["id"] for row in self._rows("SELECT id FROM mail WHERE state = 'dead'")]
        return [mail_id for mail_id in ids if self.retry(mail_id)]

    def delete(self, mail_id: str, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        with self._transaction() as db:
            row = db.execute("SELECT state, lease_until, path FROM mail WHERE id = ?", (mail_id,)).fetchone()
            if row is None:
                return False
            if row["state"] == "active" and not _abandoned(row, now):
                raise SpoolBusyError(f"{mail_id} is being delivered right now; try again in a moment")
            db.execute("DELETE FROM mail WHERE id = ?", (mail_id,))
        with _boundary():
            self._drop_file(row["path"])
        return True
