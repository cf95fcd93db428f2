"""What the shared queue writes, as plain values: the SQS message of a mail, and its DynamoDB item.

The message is self-contained (envelope, targets, the S3 key and digest of the raw mail), so that any
gateway can rebuild the item from it should the item be missing (a gateway that died between sending the
message and writing the item). The item is the mail's state, in the spool's words (:class:`MailState`,
:class:`TargetState`, :class:`Notice`), and becomes the same :class:`QueuedMail` the spool gives, so that
the workers and ``mail-gateway queue`` read both alike. Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from gateway.delivery.spool import MailState, QueuedMail, QueuedTarget, TargetState
from gateway.mail import MailContent, ReceivedMail, Target, route_json
from gateway.replies import Reply
from gateway.settings import RouteSettings

__all__ = [
    "PROBE",
    "VERSION",
    "Envelope",
    "envelope_of",
    "is_probe",
    "mail_key",
    "moved_item",
    "new_item",
    "object_key",
    "queued_mail",
    "request_key",
    "request_keys",
    "thread_key",
]

VERSION = 1
PROBE = "probe"  # a message `mail-gateway check` sends to prove it may: deleted by whoever receives it


def mail_key(mail_id: str) -> str:
    return f"mail#{mail_id}"


def object_key(prefix: str, mail_id: str) -> str:
    """The raw mail in the bucket; its requests beside it, under the same ``<prefix><id>/``."""
    return f"{prefix}{mail_id}/mail.eml"


def request_key(prefix: str, mail_id: str, position: int, generation: int) -> str:
    return f"{prefix}{mail_id}/request-{position}-{generation}.json"


def thread_key(instance_id: str, message_id: str) -> str:
    """A Message-ID as a key of bounded length (DynamoDB keys: 2,048 bytes; a Message-ID: up to 998)."""
    return f"thread#{instance_id}#{hashlib.sha256(message_id.encode()).hexdigest()[:40]}"


@dataclass(frozen=True)
class Envelope:
    """The SQS message of a mail: everything needed to deliver it, with the raw bytes' place in S3."""

    id: str
    generation: int
    received_at: float
    sender: str
    recipients: tuple[str, ...]
    message_id: str | None
    size: int
    key: str
    sha256: str
    targets: tuple[tuple[Target, tuple[str, ...]], ...]  # each contact to make, with its recipients
    verdicts: str | None = None  # the trust checks' result at DATA (JSON), as the spool keeps it

    @classmethod
    def of(
        cls,
        mail_id: str,
        mail: ReceivedMail,
        received_at: float,
        message_id: str | None,
        key: str,
        sha256: str,
    ) -> Envelope:
        """Recipients grouped by contact, as the spool groups them (``a@x`` and ``a+tag@x``: one)."""
        groups: dict[tuple[str, str], tuple[Target, list[str]]] = {}
        for recipient, target in zip(mail.recipients, mail.targets, strict=True):
            groups.setdefault(target.key, (target, []))[1].append(recipient)
        return cls(
            mail_id,
            0,
            received_at,
            mail.sender,
            tuple(mail.recipients),
            message_id,
            mail.content.size,
            key,
            sha256,
            tuple((target, tuple(recipients)) for target, recipients in groups.values()),
            mail.verdicts,
        )

    def body(self) -> str:
        """JSON; each distinct route once (a mail to 100 recipients of one route names it once)."""
        routes: list[dict[str, Any]] = []
        indexes: dict[str, int] = {}
        targets = []
        for target, recipients in self.targets:
            text = route_json(target.route)
            if text not in indexes:
                indexes[text] = len(routes)
                routes.append(json.loads(text))
            targets.append(
                {
                    "route": indexes[text],
                    "destination": target.destination,
                    "tag": target.tag,
                    "recipients": list(recipients),
                }
            )
        return json.dumps(
            {
                "v": VERSION,
                "id": self.id,
                "generation": self.generation,
                "received_at": self.received_at,
                "sender": self.sender,
                "recipients": list(self.recipients),
                "message_id": self.message_id,
                "size": self.size,
                "key": self.key,
                "sha256": self.sha256,
                "routes": routes,
                "targets": targets,
                "verdicts": self.verdicts,
            },
            separators=(",", ":"),
        )

    @classmethod
    def parse(cls, body: str) -> Envelope:
        """The envelope of a message body; ValueError for anything else (a probe, a stranger's message)."""
        try:
            document = json.loads(body)
            if not isinstance(document, dict) or document.get("v") != VERSION:
                raise ValueError("not a mail of this gateway's shared queue")
            routes = [RouteSettings(**route) for route in document["routes"]]
            return cls(
                id=str(document["id"]),
                generation=int(document["generation"]),
                received_at=float(document["received_at"]),
                sender=str(document["sender"]),
                recipients=tuple(document["recipients"]),
                message_id=document["message_id"],
                size=int(document["size"]),
                key=str(document["key"]),
                sha256=str(document["sha256"]),
                targets=tuple(
                    (
                        Target(routes[t["route"]], t["destination"], t["tag"]),
                        tuple(t["recipients"]),
                    )
                    for t in document["targets"]
                ),
                verdicts=document.get("verdicts"),
            )
        except (KeyError, TypeError, IndexError, json.JSONDecodeError) as error:
            raise ValueError(f"not a mail of this gateway's shared queue: {error!r}") from None

    def redone(self, generation: int) -> Envelope:
        """The same mail sent again (``queue retry``): messages of older generations are stale."""
        return replace(self, generation=generation)


def is_probe(body: str) -> bool:
    try:
        document = json.loads(body)
    except json.JSONDecodeError:
        return False
    return isinstance(document, dict) and PROBE in document


def new_item(envelope: Envelope, state: MailState, now: float) -> dict[str, Any]:
    """The item of a mail just accepted (or rebuilt from its message): every target pending."""
    return {
        "id": envelope.id,
        "state": str(state),
        "generation": envelope.generation,
        "received_at": envelope.received_at,
        "sender": envelope.sender,
        "recipients": list(envelope.recipients),
        "message_id": envelope.message_id,
        "size": envelope.size,
        "key": envelope.key,
        "sha256": envelope.sha256,
        "verdicts": envelope.verdicts,
        "attempts": 0,
        "failures": 0,
        "next_attempt_at": now,
        "last_error": None,
        "notice": None,
        "owner": "",
        "targets": [
            {
                "route": route_json(target.route),
                "destination": target.destination,
                "tag": target.tag,
                "recipients": list(recipients),
                "state": str(TargetState.PENDING),
                "request": None,
                "generation": 0,
                "built_at": None,  # no contact_id yet: the first one recorded stays (if_not_exists)
                "error": None,
                "error_service": None,
                "error_code": None,
                "reply_code": None,
                "reply_status": None,
                "reply_text": None,
            }
            for target, recipients in envelope.targets
        ],
    }


def moved_item(
    mail: QueuedMail, key: str, sha256: str, prefix: str, generations: Mapping[int, int]
) -> dict[str, Any]:
    """The item of a spool's mail moved into the shared queue: its state, attempts, contacts made and
    errors as the spool had them; ``generations``: the targets whose built request was written."""
    return {
        "id": mail.id,
        "state": str(MailState.QUEUED if mail.state == MailState.ACTIVE else mail.state),
        "generation": 0,
        "received_at": mail.received_at,
        "sender": mail.sender,
        "recipients": list(mail.recipients),
        "message_id": mail.message_id,
        "size": mail.size,
        "key": key,
        "sha256": sha256,
        "verdicts": mail.verdicts,
        "attempts": mail.attempts,
        "failures": mail.failures,
        "next_attempt_at": mail.next_attempt_at,
        "last_error": mail.last_error,
        "notice": mail.notice,
        "owner": "",
        "targets": [
            {
                "route": route_json(t.target.route),
                "destination": t.target.destination,
                "tag": t.target.tag,
                "recipients": list(t.recipients),
                "state": str(t.state),
                "request": request_key(prefix, mail.id, t.position, 1) if t.position in generations else None,
                "generation": generations.get(t.position, 0),
                "built_at": t.built_at,
                **({"contact_id": t.contact_id} if t.contact_id else {}),
                "error": t.error,
                "error_service": t.error_service,
                "error_code": t.error_code,
                "reply_code": t.reply.code if t.reply else None,
                "reply_status": t.reply.status if t.reply else None,
                "reply_text": t.reply.text if t.reply else None,
            }
            for t in mail.targets
        ],
    }


def envelope_of(item: Mapping[str, Any]) -> Envelope:
    """The message of an item (``queue retry`` and ``queue move`` send one anew)."""
    return Envelope(
        id=item["id"],
        generation=int(item.get("generation", 0)),
        received_at=float(item["received_at"]),
        sender=item["sender"],
        recipients=tuple(item["recipients"]),
        message_id=item.get("message_id"),
        size=int(item["size"]),
        key=item["key"],
        sha256=item["sha256"],
        targets=tuple(
            (
                Target(RouteSettings(**json.loads(t["route"])), t["destination"], t.get("tag")),
                tuple(t["recipients"]),
            )
            for t in item["targets"]
        ),
        verdicts=item.get("verdicts"),
    )


def queued_mail(
    item: Mapping[str, Any],
    content: MailContent | None = None,
    requests: Mapping[int, Any] | None = None,
) -> QueuedMail:
    """The item as the spool's :class:`QueuedMail`; ``requests``: the built requests read from S3."""
    requests = requests or {}
    return QueuedMail(
        id=item["id"],
        received_at=float(item["received_at"]),
        sender=item["sender"],
        recipients=tuple(item["recipients"]),
        message_id=item.get("message_id"),
        size=int(item["size"]),
        state=MailState(item["state"]),
        attempts=int(item.get("attempts", 0)),
        next_attempt_at=float(item.get("next_attempt_at", item["received_at"])),
        last_error=item.get("last_error"),
        notice=item.get("notice"),
        targets=tuple(
            _target(position, t, requests.get(position)) for position, t in enumerate(item["targets"])
        ),
        content=content,
        lease_until=item.get("lease_until"),
        failures=int(item.get("failures", 0)),
        verdicts=item.get("verdicts"),
    )


def _target(position: int, target: Mapping[str, Any], request: Any) -> QueuedTarget:
    return QueuedTarget(
        position=position,
        target=Target(RouteSettings(**json.loads(target["route"])), target["destination"], target.get("tag")),
        recipients=tuple(target["recipients"]),
        state=TargetState(target["state"]),
        request=request,
        built_at=target.get("built_at"),
        contact_id=target.get("contact_id"),
        error=target.get("error"),
        error_service=target.get("error_service"),
        error_code=target.get("error_code"),
        reply=Reply(int(target["reply_code"]), target["reply_status"], target["reply_text"])
        if target.get("reply_code")
        else None,
    )


def request_keys(
    prefix: str, item: Mapping[str, Any], generations: Mapping[int, int] | None = None
) -> list[str]:
    """Every request object a mail's targets may have written, each generation of each (``generations``:
    the latest by position, when the caller knows better than the item it read)."""
    targets: Sequence[Mapping[str, Any]] = item.get("targets", [])
    latest = {position: int(target.get("generation", 0)) for position, target in enumerate(targets)}
    latest.update(generations or {})
    return [
        request_key(prefix, item["id"], position, generation)
        for position, last in latest.items()
        for generation in range(1, last + 1)
    ]
