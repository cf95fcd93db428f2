"""Each route's place (:class:`~gateway.delivery.deliverer.Place`) under the configuration in force.

A route's placement (region, role, endpoints: :mod:`gateway.aws.placement`) picks its clients from the
:class:`~gateway.aws.clients.ClientPool`; its bucket and prefix pick its attachment store. A reload
(:meth:`RoutePlaces.update`) makes later deliveries use the new configuration and lets the pool close
the clients no route uses any more.
"""

from __future__ import annotations

from gateway.aws.attachments import S3AttachmentStore
from gateway.aws.clients import ClientPool
from gateway.aws.connect import ConnectContacts
from gateway.aws.placement import Placement, placement, route_attachments
from gateway.delivery.deliverer import Place
from gateway.observe.metrics import Metrics
from gateway.settings import RouteSettings, Settings

__all__ = ["RoutePlaces", "placements"]


def placements(settings: Settings) -> frozenset[Placement]:
    """Every placement the configuration's routes use."""
    return frozenset(placement(route, settings.aws) for route in settings.routes)


class RoutePlaces:
    def __init__(self, pool: ClientPool, settings: Settings, metrics: Metrics) -> None:
        self._pool = pool
        self._settings = settings
        self._metrics = metrics

    async def update(self, settings: Settings) -> None:
        self._settings = settings
        await self._pool.retain(placements(settings))

    async def __call__(self, route: RouteSettings) -> Place:
        where = placement(route, self._settings.aws)
        attachments = route_attachments(route, self._settings.attachments)
        clients = await self._pool.clients(where)
        metrics = self._metrics
        return Place(
            S3AttachmentStore(clients.s3, attachments, where.aws, metrics),
            ConnectContacts(clients.connect, metrics),
            attachments,
            where.quota,
            where,
        )
