"""The SQLite spool, directly: states, targets, retries, threading memory."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, cast

import pytest

from gateway.delivery.spool import THREAD_DAYS, MailState, Spool, SpoolBusyError, TargetState
from gateway.delivery.workers import _after
from gateway.errors import PermanentError
from gateway.mail import InMemoryContent, ReceivedMail, Target, route_json
from gateway.settings import RouteSettings

if TYPE_CHECKING:
    from types_aiobotocore_connect.type_defs import StartEmailContactRequestTypeDef

ROUTE = RouteSettings(match="support@example.com", instance_id="i-1", attributes={"a": "b"})
OTHER = RouteSettings(match="*@help.example.com", instance_id="i-2", destination="help@example.com")
RAW = b"Message-ID: <m1@client.test>\r\nSubject: s\r\n\r\nbody\r\n"


def received(raw: bytes = RAW) -> ReceivedMail:
    return ReceivedMail(
        sender="customer@client.test",
        recipients=("support@example.com", "support+vip@example.com", "x@help.example.com"),
        targets=(
            Target(ROUTE, "support@example.com"),
            Target(ROUTE, "support@example.com", "vip"),
            Target(OTHER, "help@example.com"),
        ),
        content=InMemoryContent(raw),
        peer="127.0.0.1",
        helo="client.test",
    )


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool")


def test_put_keeps_envelope_and_groups_recipients_by_contact(spool: Spool) -> None:
    queue_id = spool.put(received(), now=1000.0)
    mail = spool.get(queue_id, with_content=True)
    assert mail is not None and mail.content is not None
    assert (mail.state, mail.sender, mail.content.read(), mail.message_id) == (
        "queued",
        "customer@client.test",
        RAW,
        "<m1@client.test>",
    )
    assert [(t.target.destination, t.recipients) for t in mail.targets] == [
        ("support@example.com", ("support@example.com", "support+vip@example.com")),
        ("help@example.com", ("x@help.example.com",)),
    ]
    assert mail.targets[0].target.route == ROUTE  # the route as it was when the mail was accepted
    assert spool.counts()[MailState.QUEUED] == 1


def test_put_takes_the_message_id_the_front_door_read(spool: Spool) -> None:
    """The front door's triage read it (or found none): the spool does not parse the header again; a mail
    nobody read yet gets the header's."""
    as_read = replace(received(), message_id="<as-triage-read@client.test>", message_id_known=True)
    found_none = replace(received(), message_id=None, message_id_known=True)
    ids = [spool.get(spool.put(mail)) for mail in (as_read, found_none, received())]
    assert [mail.message_id if mail else "gone" for mail in ids] == [
        "<as-triage-read@client.test>",
        None,
        "<m1@client.test>",
    ]


def test_a_route_is_written_as_json_once_per_route_object() -> None:
    text = route_json(ROUTE)
    assert route_json(ROUTE) is text and json.loads(text)["attributes"] == {"a": "b"}
    changed = replace(ROUTE, attributes={"a": "c"})  # another route object: its own text
    assert json.loads(route_json(changed))["attributes"] == {"a": "c"}


def test_claim_defer_and_recover(spool: Spool) -> None:
    queue_id = spool.put(received(), now=1000.0)
    claimed = spool.claim(now=1000.0)
    assert claimed is not None and claimed.id == queue_id
    assert claimed.content is not None and claimed.content.read() == RAW
    assert spool.claim(now=1000.0) is None
    spool.defer(queue_id, until=1060.0, error="451 throttled", attempt=True)
    assert spool.claim(now=1059.0) is None
    assert spool.next_due() == 1060.0
    again = spool.claim(now=1060.0)
    assert again is not None and again.attempts == 1 and again.last_error == "451 throttled"
    assert spool.recover() == 1  # a crash left it active
    assert spool.get(queue_id).state == "queued"  # type: ignore[union-attr]


def test_stored_request_survives(spool: Spool) -> None:
    queue_id = spool.put(received())
    request = cast("StartEmailContactRequestTypeDef", {"InstanceId": "i-1", "ClientToken": "t"})
    spool.save_request(queue_id, 0, request, built_at=5.0)
    target = spool.get(queue_id).targets[0]  # type: ignore[union-attr]
    assert (target.request, target.built_at) == (request, 5.0)


def test_done_drops_the_raw_bytes(spool: Spool) -> None:
    queue_id = spool.put(received())
    spool.delivered(queue_id, 0, "contact-1", ["<m1@client.test>"])
    spool.delivered(queue_id, 1, "contact-2", ["<m1@client.test>"])
    spool.finish(queue_id)
    mail = spool.get(queue_id, with_content=True)
    assert mail is not None and mail.state == "done" and mail.content is None
    assert [t.contact_id for t in mail.targets] == ["contact-1", "contact-2"]


def test_dead_letters_are_retried_with_their_failed_targets_rebuilt(spool: Spool) -> None:
    queue_id = spool.put(received())
    spool.save_request(queue_id, 0, cast("StartEmailContactRequestTypeDef", {"ClientToken": "t"}), 1.0)
    spool.delivered(queue_id, 1, "contact-2", [])
    spool.failed(queue_id, 0, PermanentError("...", service="connect", code="InvalidRequestException"))
    spool.bury(queue_id, "refused")
    assert spool.counts()[MailState.DEAD] == 1
    assert spool.retry_dead() == [queue_id]
    mail = spool.get(queue_id)
    assert mail is not None and mail.state == "queued"
    assert [(t.state, t.request) for t in mail.targets] == [("pending", None), ("delivered", None)]


def test_retry_and_delete_refuse_what_they_cannot_do(spool: Spool) -> None:
    queue_id = spool.put(received())
    assert not spool.retry(queue_id)  # queued already
    assert not spool.retry("no-such-id")
    spool.claim()
    with pytest.raises(SpoolBusyError):
        spool.delete(queue_id)
    spool.release(queue_id)
    assert spool.delete(queue_id)
    assert spool.get(queue_id) is None
    assert not spool.delete(queue_id)


def test_threads_remember_contacts_per_instance_for_90_days(spool: Spool) -> None:
    queue_id = spool.put(received())
    spool.delivered(queue_id, 0, "contact-1", ["<m1@client.test>"])
    assert spool.related_contact("i-1", ["<unknown@x>", "<m1@client.test>"]) == "contact-1"
    assert spool.related_contact("i-2", ["<m1@client.test>"]) is None
    import time

    spool.purge(now=time.time() + (THREAD_DAYS + 1) * 86400)
    assert spool.related_contact("i-1", ["<m1@client.test>"]) is None


def test_a_second_connection_sees_the_same_spool(tmp_path: Path) -> None:
    first = Spool(tmp_path / "s")
    queue_id = first.put(received())
    second = Spool(tmp_path / "s", create=False)
    assert second.get(queue_id) is not None
    with pytest.raises(FileNotFoundError):
        Spool(tmp_path / "missing", create=False)


def test_what_a_worker_concludes_from_is_what_the_spool_holds(spool: Spool) -> None:
    """After an attempt that only delivered, a worker concludes from the claimed mail with its deliveries
    applied instead of reading the mail back: the same targets, states and ContactIds as the spool's."""
    spool.put(received())
    item = spool.claim()
    assert item is not None and len(item.targets) == 2
    spool.delivered(item.id, 1, "contact-1")
    held = spool.get(item.id)
    assert held is not None
    view = _after(item, {1: "contact-1"})
    assert [(t.position, t.state, t.contact_id) for t in view.targets] == [
        (t.position, t.state, t.contact_id) for t in held.targets
    ]
    assert [t.state for t in view.targets] == [TargetState.PENDING, TargetState.DELIVERED]
