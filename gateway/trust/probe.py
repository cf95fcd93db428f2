"""``mail-gateway check``: are the configured resolvers and engines there, and answering?"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp

from gateway.settings import Settings
from gateway.trust.dns import Dns, TemporaryDnsError
from gateway.trust.filters import Clamd, EngineError, Rspamd, describe

__all__ = ["Probe", "probe"]


@dataclass(frozen=True)
class Probe:
    ok: bool
    item: str
    detail: str


async def probe(settings: Settings) -> list[Probe]:
    """One line for DNS (when sender authentication is on), rspamd and clamd (when configured)."""
    found: list[Probe] = []
    if settings.authentication.enabled:
        servers = ", ".join(f"{h}:{p}" for h, p in settings.dns.nameservers) or "the system's resolver"
        try:
            await Dns(settings.dns).lookup(".", "NS")
            found.append(Probe(True, f"dns {servers}", "answers"))
        except TemporaryDnsError as error:
            found.append(Probe(False, f"dns {servers}", f"no answer: {error}"))
    filters = settings.filters
    if filters.rspamd_url is not None:
        async with aiohttp.ClientSession() as session:
            try:
                await Rspamd(filters.rspamd_url, filters.rspamd_timeout, session).ping()
                found.append(Probe(True, f"rspamd {filters.rspamd_url}", "answers /ping"))
            except EngineError as error:
                found.append(Probe(False, f"rspamd {filters.rspamd_url}", str(error)))
    if filters.clamd_address is not None:
        item = f"clamd {describe(filters.clamd_address)}"
        try:
            version = await Clamd(
                filters.clamd_address, filters.clamd_timeout, filters.clamd_max_size
            ).version()
            found.append(Probe(True, item, f"answers ({version})"))
        except EngineError as error:
            found.append(Probe(False, item, str(error)))
    return found
