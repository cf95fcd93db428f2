"""Creating the contact: ``StartEmailContact`` through aiobotocore.

The request arrives fully built (:mod:`gateway.contact.request`); this module only sends it and reads the
answer. A 409 IdempotencyException means an earlier attempt of this very mail already made the contact:
that is a delivery, reported as :class:`~gateway.errors.DuplicateRequestError` for the caller to count as one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from gateway.aws.boundary import translated
from gateway.observe.metrics import Metrics

if TYPE_CHECKING:
    from types_aiobotocore_connect import ConnectClient
    from types_aiobotocore_connect.type_defs import StartEmailContactRequestTypeDef

__all__ = ["ConnectContacts", "ContactStarter"]


class ContactStarter(Protocol):
    async def start(self, request: StartEmailContactRequestTypeDef) -> str:
        """Create the contact and return its ContactId; raises :class:`~gateway.errors.DeliveryError`."""
        ...


class ConnectContacts:
    def __init__(self, client: ConnectClient, metrics: Metrics | None = None) -> None:
        self._client = client
        self._metrics = metrics or Metrics()

    async def start(self, request: StartEmailContactRequestTypeDef) -> str:
        with self._metrics.aws_call("connect"), translated("connect"):
            response = await self._client.start_email_contact(**request)
        return response["ContactId"]
