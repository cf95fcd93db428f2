"""The spool: every mail the gateway has answered 250 for, kept durably until Connect has it.

One SQLite database under ``[queue] path`` in WAL mode with ``synchronous=FULL``: a mail and its targets
are written in one transaction that is on disk before the 250 goes out. A mail moves through states::

    queued ──claim──▶ active ──▶ done      (raw bytes dropped: personal data is not kept longer than needed)
      ▲                 │  └───▶ deferred ──(due)──▶ claimed again
      ├──retry──── dead ◀┘      (permanent refusal, or max_age reached)
      └──retry──── parked       (automatic mail under the "drop" policy: kept, never delivered by itself)

Each target (one contact) keeps the request built for it, so a retry resends exactly the same request and
Connect's idempotency answers with the same ContactId. Safe to use beside a running gateway: the operator
commands use their own connection and SQLite's locking; a mail being delivered cannot be deleted.
The ``thread`` table remembers which Message-ID became which contact, for ``RelatedContactId``.

The schema has a version (``PRAGMA user_version``); a spool written by an older gateway is brought up to
date when it is opened, in one transaction per step (:data:`MIGRATIONS`). SQLite's errors become the
gateway's own here, at the spool's boundary: :class:`~gateway.errors.SpoolFullError` for a full disk,
:class:`~gateway.errors.SpoolError` for the rest.
"""

from __future__ import annotations

import errno
import json
import secrets
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, cast

from gateway.errors import DeliveryError, SpoolError, SpoolFullError
from gateway.mail import ReceivedMail, Target
from gateway.message.mime import header_message_id
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


SCHEMA_VERSION = 2
# Each step takes the schema from its version to the next, in one transaction.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _split_replies}


_MAIL_COLUMNS = (
    "id, received_at, sender, recipients, message_id, size, state, attempts, next_attempt_at, last_error,"
    " notice"
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
    raw: bytes | None = None

    @property
    def pending(self) -> list[QueuedTarget]:
        return [t for t in self.targets if t.state == TargetState.PENDING]


def new_id(now: float) -> str:
    """Sortable by arrival, unique, short: milliseconds in hex plus 24 random bits."""
    return f"{int(now * 1000):012x}{secrets.token_hex(3)}"


def _route_json(route: RouteSettings) -> str:
    return json.dumps(asdict(route), sort_keys=True)


def _route(text: str) -> RouteSettings:
    return RouteSettings(**json.loads(text))


def _request(text: str | None) -> StartEmailContactRequestTypeDef | None:
    """A stored request, as the gateway built it (the spool holds nothing else in that column)."""
    return cast("StartEmailContactRequestTypeDef", json.loads(text)) if text else None


class Spool:
    """Synchronous, one connection; the gateway runs it in a single worker thread (see :mod:`.queue`)."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        if create:
            path.mkdir(parents=True, exist_ok=True)
        elif not (path / DATABASE).exists():
            raise FileNotFoundError(f"no spool at {path}")
        with _boundary():
            self._db = sqlite3.connect(path / DATABASE, isolation_level=None, check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
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
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with _boundary():
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

    # -- the gateway's side -------------------------------------------------------------------------

    def put(self, mail: ReceivedMail, now: float | None = None, state: MailState = MailState.QUEUED) -> str:
        """Store a mail and its targets; durable when this returns. ``parked``: kept, not delivered."""
        return self.put_many([mail], now, state)[0]

    def put_many(
        self, mails: Sequence[ReceivedMail], now: float | None = None, state: MailState = MailState.QUEUED
    ) -> list[str]:
        """Store several mails in one transaction (one disk flush for all: group commit)."""
        now = time.time() if now is None else now
        ids = [new_id(now) for _ in mails]
        with self._transaction() as db:
            for queue_id, mail in zip(ids, mails, strict=True):
                raw = mail.content.read()
                groups: dict[tuple[str, str], tuple[Target, list[str]]] = {}
                for recipient, target in zip(mail.recipients, mail.targets, strict=True):
                    groups.setdefault(target.key, (target, []))[1].append(recipient)
                db.execute(
                    "INSERT INTO mail (id, received_at, sender, recipients, message_id, size, raw, state,"
                    " next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        queue_id, now, mail.sender, json.dumps(mail.recipients), header_message_id(raw),
                        len(raw), raw, state, now,
                    ),
                )  # fmt: skip
                db.executemany(
                    "INSERT INTO target (mail_id, position, route, destination, tag, recipients, state)"
                    " VALUES (?, ?, ?, ?, ?, ?, 'pending')",
                    [
                        (queue_id, position, _route_json(t.route), t.destination, t.tag, json.dumps(rcpts))
                        for position, (t, rcpts) in enumerate(groups.values())
                    ],
                )
        return ids

    def recover(self) -> int:
        """At start: mail left active by a crash is queued again (its stored requests are kept)."""
        with self._transaction() as db:
            return db.execute("UPDATE mail SET state = 'queued' WHERE state = 'active'").rowcount

    def claim(self, now: float | None = None) -> QueuedMail | None:
        """The next due mail, marked active, with its raw bytes; None when nothing is due."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            row = db.execute(
                "SELECT id FROM mail WHERE state IN ('queued', 'deferred') AND next_attempt_at <= ?"
                " ORDER BY next_attempt_at LIMIT 1",
                (now,),
            ).fetchone()
            if row is None:
                return None
            db.execute("UPDATE mail SET state = 'active' WHERE id = ?", (row["id"],))
        return self.get(row["id"], with_raw=True)

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
        """A target became a contact; its Message-ID is remembered for the replies to come."""
        with self._transaction() as db:
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
                "UPDATE mail SET state = 'deferred', next_attempt_at = ?, last_error = ?,"
                " attempts = attempts + ? WHERE id = ?",
                (until, error, 1 if attempt else 0, mail_id),
            )

    def release(self, mail_id: str) -> None:
        """Put an active mail back as it was (shutdown before its delivery finished)."""
        with self._transaction() as db:
            db.execute("UPDATE mail SET state = 'queued' WHERE id = ? AND state = 'active'", (mail_id,))

    def bury(self, mail_id: str, reason: str) -> None:
        """Into the dead-letter area, with the reason; ``queue retry`` brings it back."""
        with self._transaction() as db:
            db.execute(
                "UPDATE mail SET state = 'dead', last_error = ?, attempts = attempts + 1 WHERE id = ?",
                (reason, mail_id),
            )

    def finish(self, mail_id: str) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE mail SET state = 'done', raw = NULL, last_error = NULL WHERE id = ?", (mail_id,)
            )

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

    def get(self, mail_id: str, *, with_raw: bool = False) -> QueuedMail | None:
        columns = _MAIL_COLUMNS + (", raw" if with_raw else "")
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
            raw=row["raw"] if with_raw else None,
        )

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
        """Deliver a dead, deferred or parked mail now; its refused targets are rebuilt and tried again."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            row = db.execute("SELECT state FROM mail WHERE id = ?", (mail_id,)).fetchone()
            if row is None or row["state"] not in ("dead", "deferred", "parked"):
                return False
            db.execute(
                "UPDATE target SET state = 'pending', request = NULL, built_at = NULL, error = NULL,"
                " error_service = NULL, error_code = NULL, reply_code = NULL, reply_status = NULL,"
                " reply_text = NULL WHERE mail_id = ? AND state = 'failed'",
                (mail_id,),
            )
            db.execute(
                "UPDATE mail SET state = 'queued', next_attempt_at = ?, notice = NULL WHERE id = ?",
                (now, mail_id),
            )
        return True

    def retry_dead(self) -> list[str]:
        ids = [row["id"] for row in self._rows("SELECT id FROM mail WHERE state = 'dead'")]
        return [mail_id for mail_id in ids if self.retry(mail_id)]

    def delete(self, mail_id: str) -> bool:
        with self._transaction() as db:
            row = db.execute("SELECT state FROM mail WHERE id = ?", (mail_id,)).fetchone()
            if row is None:
                return False
            if row["state"] == "active":
                raise SpoolBusyError(f"{mail_id} is being delivered right now; try again in a moment")
            db.execute("DELETE FROM mail WHERE id = ?", (mail_id,))
        return True
