"""The gateway's HTTP side: ``/metrics`` (Prometheus), ``/healthz`` (alive) and ``/readyz`` (take traffic).

Readiness means: the SMTP listener is up and the spool is writable with room to spare; in sync mode, also
that AWS answered recently (a Connect outage there means every mail gets a 4xx). In spool mode a Connect
outage does not take the gateway out of the load balancer: accepting mail then is the whole point.
The sandbox serves these paths on the emulator's port.
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from gateway.observe.metrics import Metrics

__all__ = ["HealthSource", "HttpEndpoint", "add_health_routes", "serve_app"]


class HealthSource(Protocol):
    @property
    def metrics(self) -> Metrics: ...

    def ready(self) -> tuple[bool, str]:
        """Whether the gateway should take traffic, and why not."""
        ...

    async def refresh_metrics(self) -> None:
        """Bring gauges read at scrape time (the queue depth) up to date."""
        ...


def add_health_routes(app: web.Application, source: HealthSource) -> None:
    async def metrics(request: web.Request) -> web.Response:
        await source.refresh_metrics()
        return web.Response(
            body=source.metrics.exposition(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(request: web.Request) -> web.Response:
        ready, reason = source.ready()
        return web.json_response(
            {"status": "ready" if ready else "not ready", "reason": reason}, status=200 if ready else 503
        )

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


async def serve_app(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Listen with ``app`` (no access log: it would hold client addresses); the runner and the bound port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError:
        await runner.cleanup()
        raise
    return runner, int(runner.addresses[0][1])


class HttpEndpoint:
    def __init__(self, source: HealthSource) -> None:
        self._source = source
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        app = web.Application()
        add_health_routes(app, self._source)
        self._runner, self.port = await serve_app(app, host, port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
