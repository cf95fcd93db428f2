"""Which ``Host:`` names the staging page answers: a defence against DNS rebinding.

The page shows customer mail. A web page on any site can make a browser resolve its own name to
127.0.0.1 and then read what the emulator serves, as if from that site; the only trace is the ``Host:``
header, which still carries the attacker's name. So the page and the inspection API answer only to IP
literals (no name to rebind), ``localhost``, the name the emulator listens on, and the names an operator
admits (``--allowed-host`` for a staging name behind a proxy). The Connect API itself is left open to any
name, since SDKs reach it by whatever endpoint name they were given and every call must carry a SigV4
signature scoped to ``connect``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

from gateway.addresses import is_ip_literal

__all__ = ["HostCheck", "host_name"]

WILDCARDS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 - names of "every address", not a binding
BROWSER_PATHS = ("/_emulator/",)


def host_name(header: str) -> str:
    """The name in a ``Host:`` header, without its port or IPv6 brackets, lower-cased."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    if header.count(":") == 1:
        return header.partition(":")[0]
    return header  # a bare name, or an IPv6 literal without brackets


class HostCheck:
    """The names admitted besides IP literals and ``localhost``: the listening host and ``allowed``."""

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        self.names = {"localhost"} | {host_name(name) for name in allowed if name.strip()}

    def listening_on(self, host: str) -> None:
        if host not in WILDCARDS:
            self.names.add(host_name(host))

    def admits(self, header: str | None) -> bool:
        """No header at all is not a browser (every browser sends one), so it is admitted."""
        if header is None:
            return True
        name = host_name(header)
        return is_ip_literal(name) or name in self.names or name.endswith(".localhost")

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        browser_facing = request.path == "/" or request.path.startswith(BROWSER_PATHS)
        if browser_facing and not self.admits(request.headers.get("Host")):
            name = host_name(request.headers.get("Host", ""))
            raise web.HTTPMisdirectedRequest(
                text=f"This emulator does not answer to the name {name!r} (a defence against DNS "
                f"rebinding). Start it with --allowed-host {name} to admit that name.\n"
            )
        return await handler(request)
