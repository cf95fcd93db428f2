"""What the machine gives the gateway: memory (the container's cgroup limit, else the RAM).

A container sees the host's RAM in ``sysconf`` but is killed at its cgroup's limit, so the limit is what
the default number of connections must fit. :func:`memory_limit` is pure (the files' texts in, bytes out)
so that v1, v2 and "no limit" are tested directly; :func:`read_memory_limit` reads the files.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CGROUP_V1_LIMIT", "CGROUP_V2_LIMIT", "memory_limit", "physical_memory", "read_memory_limit"]

CGROUP_V2_LIMIT = Path("/sys/fs/cgroup/memory.max")
CGROUP_V1_LIMIT = Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")


def physical_memory() -> int:
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError):  # not on this platform: assume a small machine
        return 2 * 1024**3


def memory_limit(physical: int, cgroup_v2: str | None = None, cgroup_v1: str | None = None) -> int:
    """The smaller of the RAM and the cgroup's limit. v2 says ``max`` for none; v1 says a huge number
    (``9223372036854771712``), which the RAM bounds anyway; a file that is missing (None) or unreadable
    text limits nothing."""
    for text in (cgroup_v2, cgroup_v1):
        if text is None:
            continue
        value = text.strip()
        if value.isdigit() and int(value) > 0:
            return min(physical, int(value))
    return physical


def _text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def read_memory_limit() -> int:
    """This process's memory: the cgroup's limit (v2, else v1) when it is below the RAM."""
    return memory_limit(physical_memory(), _text(CGROUP_V2_LIMIT), _text(CGROUP_V1_LIMIT))
