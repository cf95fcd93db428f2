"""A process and its descendants, as ``/proc`` shows them: resident memory summed over the tree, CPU time,
and a sampler of the tree's peak while something happens. Shared by the memory test and the benchmarks
(the gateway reads mail in processes of its own, so only the whole tree tells its cost)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from types import TracebackType

__all__ = ["PeakSampler", "settled", "tree", "tree_cpu_seconds", "tree_rss"]

PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (which may hold spaces)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone meanwhile
        return None
    return text[text.rindex(")") + 2 :].split()


def tree(root: int) -> list[int]:
    """``root`` and every process descended from it."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None:
            parents.setdefault(int(fields[1]), []).append(int(entry))
    found, waiting = [], [root]
    while waiting:
        pid = waiting.pop()
        found.append(pid)
        waiting += parents.get(pid, [])
    return found


def tree_rss(root: int) -> int:
    """Resident bytes of the tree, summed (shared pages counted in each process, as ``ps`` shows them)."""
    total = 0
    for pid in tree(root):
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        except (OSError, IndexError):
            continue
    return total


def settled(root: int, processes: int, interval: float = 0.5) -> bool:
    """Whether the tree has ``processes`` processes and its RSS moved by less than 1 MiB in ``interval``
    seconds: its processes have started and imported what they need (what a mail then adds is its own)."""
    before = tree_rss(root)
    time.sleep(interval)
    return len(tree(root)) >= processes and abs(tree_rss(root) - before) < 1024 * 1024


def tree_cpu_seconds(root: int) -> float:
    """User and system CPU of the tree, including its children that have ended and been waited for."""
    ticks = 0
    for pid in tree(root):
        fields = _stat(pid)
        if fields is not None:  # utime, stime, cutime, cstime: fields 14 to 17 of stat
            ticks += sum(int(value) for value in fields[11:15])
    return ticks / TICKS


class PeakSampler:
    """``with PeakSampler(pid) as sampler:`` samples the tree's RSS every ``interval`` seconds in a thread;
    ``sampler.peak`` is the largest seen (the first sample is taken before the block runs)."""

    def __init__(self, root: int, interval: float = 0.01) -> None:
        self._root = root
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peak = tree_rss(root)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, tree_rss(self._root))

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, tree_rss(self._root))
