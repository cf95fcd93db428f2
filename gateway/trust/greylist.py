"""rspamd's ``greylist`` action, carried out: a first attempt waits, a retry after the delay passes.

rspamd only says a mail deserves greylisting; the MTA has to remember. Without a memory a ``greylist``
verdict would defer the same mail on every retry until its sender gives up. The memory is a bounded table
of (client network, sender, recipients) triplets in this process: a restart forgets it, and a forgotten
triplet only waits once more.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

__all__ = ["Greylist"]

EXPIRY_SECONDS = 86400.0  # a retry after a day is a new first attempt
CAPACITY = 100_000  # triplets remembered; the oldest go first


class Greylist:
    def __init__(self, delay: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.delay = delay
        self._clock = clock
        self._first: OrderedDict[tuple[str, str, str], float] = OrderedDict()

    def passes(self, client: str, sender: str, recipients: Sequence[str]) -> bool:
        """Whether this attempt may pass; a first attempt is remembered and does not."""
        if self.delay <= 0:
            return True
        key = (_network(client), sender.casefold(), "\0".join(sorted(r.casefold() for r in recipients)))
        now = self._clock()
        first = self._first.get(key)
        if first is not None and now - first < EXPIRY_SECONDS:
            return now - first >= self.delay
        self._first[key] = now
        self._first.move_to_end(key)
        while len(self._first) > CAPACITY:
            self._first.popitem(last=False)
        return False


def _network(client: str) -> str:
    """A /24 (IPv4) or /64 (IPv6): a sending farm retries from a neighbour."""
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return client
    prefix = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))
