"""What Connect answers to ``StartEmailContact``, and what it remembers: no HTTP here.

Idempotency as the service does it: the same ClientToken with the same request gives the same ContactId
and no new contact; the same token with a different request is a 409 IdempotencyException. By default any
instance and destination are accepted; given instances or address patterns, the emulator is strict:
an unknown instance is a 404, a destination that is not an address of the instance a 400. Attachments
must be of the instance's allowed file types (Connect's default list unless told otherwise), else a 400
with the Reason INVALID_FILE_TYPE, as Connect answers.
"""

from __future__ import annotations

import fnmatch
import json
import os
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.contact import contract
from gateway.settings import CONNECT_DEFAULT_FILE_TYPES

__all__ = ["Answer", "AttachmentFetch", "Contact", "EmulatedConnect"]

MAX_CALLS_KEPT = 10_000
REGION = "us-east-1"
ACCOUNT = "111122223333"


@dataclass(frozen=True)
class Answer:
    """An HTTP status and a JSON body; ``error`` is the rest-json error code (``x-amzn-ErrorType``)."""

    status: int
    body: dict[str, Any]
    error: str | None = None

    @classmethod
    def failure(cls, status: int, error: str, message: str, **extra: Any) -> Answer:
        return cls(status, {"Message": message, **extra}, error)


@dataclass
class AttachmentFetch:
    """Connect downloads each attachment after it answers; this is what it found."""

    file_name: str
    url: str
    fetched: bool = False
    status: int | None = None
    size: int | None = None
    sha256: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "FileName": self.file_name,
            "fetched": self.fetched,
            "status": self.status,
            "size": self.size,
            "sha256": self.sha256,
            "error": self.error,
        }


@dataclass
class Contact:
    contact_id: str
    received_at: datetime
    request: dict[str, Any]
    attachments: list[AttachmentFetch] = field(default_factory=list)
    signer: dict[str, str] = field(default_factory=dict)  # Region and AccessKeyId the call was signed for

    def to_json(self) -> dict[str, Any]:
        return {
            "ContactId": self.contact_id,
            "ReceivedAt": _iso(self.received_at),
            "Request": self.request,
            "Attachments": [a.to_json() for a in self.attachments],
            **self.signer,
        }


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fingerprint(request: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in request.items() if k != "ClientToken"}, sort_keys=True)


class EmulatedConnect:
    def __init__(
        self,
        instances: Iterable[str] = (),
        addresses: Iterable[str] = (),
        on_contact: Callable[[Contact], None] | None = None,
        file_types: Iterable[str] | None = CONNECT_DEFAULT_FILE_TYPES,
        flows: Iterable[str] = (),
    ) -> None:
        self.instances = frozenset(instances)
        self.flows = frozenset(flows)
        self.addresses = tuple(a.casefold() for a in addresses)
        # Connect accepts attachments of the instance's allowed types only; None: every type.
        self.file_types = None if file_types is None else frozenset(t.lower() for t in file_types)
        self.contacts: dict[str, Contact] = {}
        self.calls: deque[dict[str, Any]] = deque(maxlen=MAX_CALLS_KEPT)
        self._tokens: dict[str, tuple[str, str]] = {}  # ClientToken -> (fingerprint, ContactId)
        self._on_contact = on_contact
        self.version = 0  # grows with every change: the page polls cheaply (ETag) and redraws on news

    def changed(self) -> None:
        self.version += 1

    def clear(self) -> None:
        self.contacts.clear()
        self.calls.clear()
        self._tokens.clear()
        self.changed()

    def record(self, operation: str, request: Any, answer: Answer, **notes: Any) -> None:
        self.changed()
        self.calls.append(
            {
                "Operation": operation,
                "ReceivedAt": _iso(datetime.now(UTC)),
                "Request": request,
                "Status": answer.status,
                "Error": answer.error,
                "Response": answer.body,
                **notes,
            }
        )

    def start_email_contact(
        self, request: Any, lost: Answer | None = None, signer: dict[str, str] | None = None
    ) -> tuple[Answer, Contact | None]:
        """The answer to one call, and the contact it created (None when it created none).

        With ``lost``, the call is processed but ``lost`` is answered instead (an injected fault).
        ``signer``: the region and access key the call was signed for, kept with the call and contact."""
        signer = signer or {}
        answer, contact = self._decide(request)
        if contact is not None:
            contact.signer = signer
        if lost is not None:
            self.record(contract.OPERATION, request, lost, Processed=answer.body, **signer)
            answer = lost
        else:
            self.record(contract.OPERATION, request, answer, **signer)
        if contact is not None and self._on_contact is not None:
            self._on_contact(contact)
        return answer, contact

    def _decide(self, request: Any) -> tuple[Answer, Contact | None]:
        found = contract.violations(request)
        if found:
            count = len(found)
            noun = "error" if count == 1 else "errors"
            message = f"{count} validation {noun} detected: " + "; ".join(str(v) for v in found)
            return Answer.failure(400, "InvalidRequestException", message), None
        instance = request["InstanceId"]
        if self.instances and instance not in self.instances:
            return Answer.failure(404, "ResourceNotFoundException", f"Instance {instance} not found"), None
        destination = request["DestinationEmailAddress"]
        if self.addresses and not self.is_address(destination):
            message = f"DestinationEmailAddress {destination} is not an email address of instance {instance}"
            return Answer.failure(400, "InvalidRequestException", message), None
        refused = self._refused_file(request.get("Attachments", []))
        if refused is not None:
            message = f"The file type of {refused} is not allowed for this instance"
            reason = {"AttachedFileInvalidRequestExceptionReason": "INVALID_FILE_TYPE"}
            return Answer.failure(400, "InvalidRequestException", message, Reason=reason), None
        token = request.get("ClientToken")
        fingerprint = _fingerprint(request)
        if token is not None and token in self._tokens:
            known, contact_id = self._tokens[token]
            if known != fingerprint:
                message = "The ClientToken was already used with a different request"
                return Answer.failure(409, "IdempotencyException", message), None
            return Answer(200, {"ContactId": contact_id}), None
        contact = Contact(str(uuid.uuid4()), datetime.now(UTC), request)
        contact.attachments = [
            AttachmentFetch(a["FileName"], a["S3Url"]) for a in request.get("Attachments", [])
        ]
        self.contacts[contact.contact_id] = contact
        if token is not None:
            self._tokens[token] = (fingerprint, contact.contact_id)
        return Answer(200, {"ContactId": contact.contact_id}), contact

    def _refused_file(self, attachments: list[dict[str, Any]]) -> str | None:
        if self.file_types is None:
            return None
        for attachment in attachments:
            name = str(attachment["FileName"])
            if os.path.splitext(name)[1].lower() not in self.file_types:
                return name
        return None

    # -- what `mail-gateway check` asks ------------------------------------------------------------------

    def describe_instance(self, instance: str) -> Answer:
        if self.instances and instance not in self.instances:
            return Answer.failure(404, "ResourceNotFoundException", f"Instance {instance} not found")
        arn = f"arn:aws:connect:{REGION}:{ACCOUNT}:instance/{instance}"
        return Answer(200, {"Instance": {"Id": instance, "Arn": arn, "InstanceStatus": "ACTIVE"}})

    def search_email_addresses(self, request: Any) -> Answer:
        """The instance's addresses: those given exactly (a pattern such as ``*@x`` cannot be listed)."""
        instance = request.get("InstanceId") if isinstance(request, dict) else None
        if not isinstance(instance, str) or not instance:
            return Answer.failure(400, "InvalidRequestException", "InstanceId is required")
        if self.instances and instance not in self.instances:
            return Answer.failure(404, "ResourceNotFoundException", f"Instance {instance} not found")
        listed = [a for a in self.addresses if "*" not in a and "?" not in a]
        prefix = f"arn:aws:connect:{REGION}:{ACCOUNT}:instance/{instance}/email-address"
        found = [
            {"EmailAddress": address, "EmailAddressId": f"address-{n}", "EmailAddressArn": f"{prefix}/{n}"}
            for n, address in enumerate(listed)
        ]
        return Answer(200, {"EmailAddresses": found, "ApproximateTotalCount": len(found)})

    def describe_contact_flow(self, instance: str, flow: str) -> Answer:
        if self.instances and instance not in self.instances:
            return Answer.failure(404, "ResourceNotFoundException", f"Instance {instance} not found")
        if self.flows and flow not in self.flows:
            return Answer.failure(404, "ResourceNotFoundException", f"Contact flow {flow} not found")
        arn = f"arn:aws:connect:{REGION}:{ACCOUNT}:instance/{instance}/contact-flow/{flow}"
        return Answer(200, {"ContactFlow": {"Id": flow, "Arn": arn, "Name": flow, "State": "ACTIVE"}})

    def is_address(self, address: str) -> bool:
        """Whether the instance has that address (patterns such as ``*@example.com`` allowed)."""
        key = address.casefold()
        return any(fnmatch.fnmatchcase(key, pattern) for pattern in self.addresses)
