"""What the process asks of the machine before it listens: open files for every connection, a listen
queue the kernel really grants, and the event loop.

A thousand sessions need a thousand sockets, plus the spool's and the readers' files; the soft
``RLIMIT_NOFILE`` (often 1,024) is raised to the hard limit, which systemd's ``LimitNOFILE`` and
container runtimes set. The kernel silently caps a listen backlog at ``net.core.somaxconn``: said in the
log, so that a configured backlog that cannot be had does not go unnoticed.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import resource
from collections.abc import Callable
from pathlib import Path

from gateway.errors import StartupError
from gateway.settings import EventLoop, Settings

__all__ = [
    "FILES_PER_CONNECTION",
    "SOMAXCONN",
    "event_loop_factory",
    "prepare",
    "raise_open_files",
    "somaxconn",
]

log = logging.getLogger(__name__)

SOMAXCONN = Path("/proc/sys/net/core/somaxconn")
FILES_PER_CONNECTION = 2  # its socket, and the file a large mail spills to


def raise_open_files() -> tuple[int, int]:
    """The soft limit of open files raised to the hard one; (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):  # not allowed here: keep what there is
            return soft, soft
        return soft, hard
    return soft, soft


def somaxconn(path: Path = SOMAXCONN) -> int | None:
    """The kernel's cap on a listen backlog, where the kernel says it."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def prepare(settings: Settings) -> None:
    """Open files and the listen backlog, logged: what this process will be able to take."""
    before, after = raise_open_files()
    limits = settings.limits
    if after != before:
        log.info("open files limit raised from %d to %d", before, after)
    if after < FILES_PER_CONNECTION * limits.max_connections:
        log.warning(
            "open files limit %d is low for limits.max_connections = %d: raise LimitNOFILE (or ulimit -n)",
            after,
            limits.max_connections,
        )
    cap = somaxconn()
    if cap is not None and limits.listen_backlog > cap:
        log.warning(
            "listen backlog %d is capped by the kernel at net.core.somaxconn = %d", limits.listen_backlog, cap
        )


def event_loop_factory(choice: EventLoop) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when chosen, or for ``auto`` when installed (the ``fast`` extra); None: asyncio's."""
    installed = importlib.util.find_spec("uvloop") is not None
    if choice == EventLoop.ASYNCIO or (choice == EventLoop.AUTO and not installed):
        return None
    if not installed:
        raise StartupError(
            "smtp.event_loop", 'uvloop is not installed: pip install "connect-mail-gateway[fast]"'
        )
    import uvloop

    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop  # typed with uvloop or without
    return factory
