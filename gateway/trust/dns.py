"""DNS for the sender checks: one asynchronous resolver, and a bridge for the synchronous libraries.

Every query goes through :class:`Dns` (dnspython's asyncio resolver, ``[dns] nameservers`` or the
system's, each query bounded by ``[dns] timeout``). A timeout or a server failure is a
:class:`TemporaryDnsError` (the checks report ``temperror``); a name that does not exist, or has no record of
that type, is an empty answer. pyspf and dkimpy are synchronous and run in worker threads; they ask through
:class:`Blocking`, which runs each query on the event loop and waits for it in the thread, so that the
loop never blocks and a test points every library at its own server with one setting.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Protocol, TypeVar

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from gateway.settings import DnsSettings

__all__ = ["Blocking", "Dns", "DnsLookup", "Record", "TemporaryDnsError"]

T = TypeVar("T")
CACHE_ENTRIES = 4096  # answers kept (with their TTLs): the same DMARC record for a burst of mails

Record = tuple[str, str, object]  # (owner name, type, value): an address, (preference, exchange), strings...


class TemporaryDnsError(Exception):
    """No answer now (a timeout, SERVFAIL, no reachable server): the result is a ``temperror``."""


class DnsLookup(Protocol):
    """What the checks need of DNS; :class:`Dns` in the gateway."""

    async def lookup(self, name: str, rdtype: str) -> list[Record]: ...

    async def txt(self, name: str) -> list[bytes]: ...


class Dns:
    """dnspython's asyncio resolver, aimed at ``[dns] nameservers`` (or the system's)."""

    def __init__(self, settings: DnsSettings) -> None:
        self.timeout = settings.timeout
        if settings.nameservers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(host, port) for host, port in settings.nameservers
            ]
        else:
            try:
                resolver = dns.asyncresolver.Resolver()
            except dns.exception.DNSException:  # no /etc/resolv.conf: every query is a temperror
                resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.timeout = settings.timeout
        resolver.lifetime = settings.timeout
        resolver.cache = dns.resolver.LRUCache(CACHE_ENTRIES)
        self._resolver = resolver

    async def lookup(self, name: str, rdtype: str) -> list[Record]:
        """Every record of the answer (CNAMEs included, as pyspf wants them)."""
        try:
            answer = await self._resolver.resolve(name, rdtype, raise_on_no_answer=False, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.YXDOMAIN):
            return []
        except (dns.name.NameTooLong, dns.name.EmptyLabel, dns.name.LabelTooLong, dns.name.BadEscape):
            return []  # a name no one can publish (from a hostile header): nothing there
        except dns.exception.Timeout as error:
            raise TemporaryDnsError(f"{name} {rdtype}: timed out") from error
        except dns.exception.DNSException as error:  # SERVFAIL, REFUSED, no servers: may clear
            raise TemporaryDnsError(f"{name} {rdtype}: {type(error).__name__}") from error
        records: list[Record] = []
        if answer.response is None:  # pragma: no cover - a resolved answer always has its response
            return records
        for rrset in answer.response.answer:
            kind = dns.rdatatype.to_text(rrset.rdtype)
            owner = rrset.name.to_text(omit_final_dot=True)
            for rdata in rrset:
                value: object
                if kind in ("A", "AAAA"):
                    value = rdata.address
                elif kind == "MX":
                    value = (rdata.preference, rdata.exchange.to_text(omit_final_dot=True))
                elif kind in ("PTR", "CNAME"):
                    value = rdata.target.to_text(omit_final_dot=True)
                elif kind in ("TXT", "SPF"):
                    value = tuple(rdata.strings)
                else:
                    continue
                records.append((owner, kind, value))
        return records

    async def txt(self, name: str) -> list[bytes]:
        """Each TXT record of ``name`` (its strings joined), nothing for a name without one."""
        records = await self.lookup(name, "TXT")
        return [b"".join(value) for _, kind, value in records if kind == "TXT" and isinstance(value, tuple)]


class Blocking:
    """DNS for a worker thread: each query runs on ``loop`` and the thread waits for its answer.

    Never call it from the loop's own thread (it would wait for itself); it refuses to."""

    def __init__(self, lookup: DnsLookup, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self._lookup = lookup
        self._loop = loop
        self._timeout = timeout + 1.0  # the resolver's own lifetime ends first

    def lookup(self, name: str, rdtype: str) -> list[Record]:
        self._not_on_the_loop()
        future = asyncio.run_coroutine_threadsafe(self._lookup.lookup(name, rdtype), self._loop)
        return self._result(future, name)

    def txt(self, name: str) -> list[bytes]:
        self._not_on_the_loop()
        future = asyncio.run_coroutine_threadsafe(self._lookup.txt(name), self._loop)
        return self._result(future, name)

    def _result(self, future: concurrent.futures.Future[T], name: str) -> T:
        try:
            return future.result(self._timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TemporaryDnsError(f"{name}: no answer in time") from None
        except concurrent.futures.CancelledError:  # the loop is shutting down
            raise TemporaryDnsError(f"{name}: cancelled") from None

    def _not_on_the_loop(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            return
        if running is self._loop:
            raise RuntimeError("Blocking DNS called on the event loop's own thread")
