"""Worker processes that can be killed: a task that runs out of time, is cancelled, or kills its process
takes the process with it, and a fresh one replaces it.

Each is a fresh interpreter that imports only what its tasks need, talking over a socket pair: not
multiprocessing's forkserver, whose server process (29 MiB, the preloaded parser) and the resource tracker
it requires (12 MiB) cost more than two readers together. Like forkserver's children, it takes the parent's
``sys.path`` before it imports anything of ours (so it runs the parent's code, wherever that came from), and
it counts as started only once it said it is ready: one that cannot start is retried, and no mail is blamed.
It is in a process group of its own and ignores SIGINT and SIGTERM (a Ctrl-C, or systemd stopping the
unit, is the parent's to act on: it stops its readers once mails in progress are done), and it ends itself
when its parent is gone.

Each process has its own pipe and takes one task at a time; the exchange (task out, answer back) runs in
a thread, so that a large answer is never unpickled on the event loop and the budget's timer always
fires. A process found dead when it is given a task (killed, out of memory, its initializer failed) is
replaced and another takes the task: the task is not blamed. It replaced pebble's pool, which wakes every
idle process for each task over one shared pipe, acknowledges it, and runs two threads in the parent:
with the small mail's bytes sent along instead of looked up in the spool, reading a 2 KB mail went from
2.0 to 1.1 ms of the readers' CPU, and the parent's 0.6 ms of pool threads went.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, TypeVar

__all__ = ["ProcessDied", "ProcessPool", "UnreadableAnswer"]

log = logging.getLogger(__name__)

T = TypeVar("T")
RESPAWN_DELAY_SECONDS = 1.0  # a process that could not be started is tried again after this
JOIN_SECONDS = 5.0


class ProcessDied(Exception):
    """The process running the task ended before it answered."""

    def __init__(self, exitcode: int | None) -> None:
        super().__init__(f"the process ended (exit code {exitcode})")
        self.exitcode = exitcode


@dataclass(eq=False)  # each is itself: kept in sets
class _Worker:
    process: subprocess.Popen[bytes]
    connection: Connection
    tasks: int = 0

    def alive(self) -> bool:
        return self.process.poll() is None

    def exit_code(self, wait: float = 0.0) -> int | None:
        """Its exit code; ``wait``: how long it may take to be reaped after its pipe ended."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(wait)
        return self.process.returncode

    def stop(self, *, kill: bool) -> None:
        """Ends it: killed (mid-task, its state unknown), or asked to end (its pipe closed)."""
        if kill:
            self.process.kill()
        self.connection.close()
        if self.exit_code(JOIN_SECONDS) is None:
            self.process.kill()
            self.exit_code(JOIN_SECONDS)


READY = "ready"  # what a process says once its initializer ran
START_SECONDS = 60.0  # a process that has not said it is ready by then is stopped, and another started
# A new process's first lines: standard library only, until the parent's sys.path is in place.
_BOOTSTRAP = """\
import sys
from multiprocessing.connection import Connection
connection = Connection({descriptor})
try:
    sys.path[:] = connection.recv()
except (EOFError, OSError):
    raise SystemExit(0)
from {module} import main
main(connection)
"""


def _serve(connection: Connection, initializer: Callable[..., None], initargs: tuple[Any, ...]) -> None:
    """A worker process: ready once ``initializer`` ran, then tasks in, ``(True, result)`` or ``(False,
    exception)`` out, until the pipe ends."""
    initializer(*initargs)
    connection.send(READY)
    while True:
        try:
            task, arguments = connection.recv()
        except (EOFError, OSError):  # the parent stopped it, or is gone
            return
        try:
            answer: tuple[bool, Any] = (True, task(*arguments))
        except Exception as error:  # the task's failure is the caller's to judge (a signal ends the process)
            answer = (False, error)
        try:
            connection.send(answer)
        except OSError:  # the parent is gone
            return
        except Exception as error:  # an answer that cannot be pickled
            connection.send((False, RuntimeError(f"the answer could not be sent: {type(error).__name__}")))


class UnreadableAnswer(Exception):
    """The process answered, but its answer could not be unpickled."""


class _Gone(Exception):
    """The process had ended before it was given the task."""


def _exchange(worker: _Worker, task: Callable[..., Any], arguments: tuple[Any, ...]) -> tuple[bool, Any]:
    """The task to the process and its answer back, in a thread: a large answer (a parse with every file's
    bytes) is never unpickled on the event loop."""
    if not worker.alive():
        raise _Gone
    try:
        worker.connection.send((task, arguments))
    except OSError:
        raise _Gone from None
    try:
        answer: tuple[bool, Any] = worker.connection.recv()
    except (EOFError, OSError):
        raise ProcessDied(worker.exit_code(JOIN_SECONDS)) from None
    except Exception as error:  # an answer that was pickled there but does not unpickle here
        raise UnreadableAnswer(type(error).__name__) from None
    return answer


class ProcessPool:
    """Up to ``processes`` processes, each running ``initializer(*initargs)`` first and replaced after
    ``max_tasks`` tasks (whatever it fragmented is given back). Tasks, their arguments and answers are
    pickled: functions by their module's name, which each process imports with the parent's ``sys.path``."""

    def __init__(
        self,
        processes: int,
        *,
        initializer: Callable[..., None],
        initargs: tuple[Any, ...] = (),
        max_tasks: int = 0,
    ) -> None:
        self._size = processes
        self._initializer = initializer
        self._initargs = initargs
        self._max_tasks = max_tasks
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._workers: set[_Worker] = set()
        self._spawning: set[asyncio.Task[None]] = set()  # processes being started
        self._stopping: set[asyncio.Task[None]] = set()  # retired ones being stopped
        self._retired: set[_Worker] = set()  # not yet reaped
        self._starting: set[_Worker] = set()  # started, not yet ready (under _lock)
        self._closed = False
        self._waiting = 0  # tasks waiting for an idle process
        self._lock = threading.Lock()  # _closed, _workers and _starting: close() and a starting thread

    def start(self) -> None:
        """Start the first process, in the background; the others start when a task finds every process
        busy (a quiet gateway keeps one: 29 MiB each)."""
        if not self._workers and not self._spawning:
            self._keep(self._spawn(), self._spawning)

    def _grow(self) -> None:
        """Another process, when more tasks wait than processes are idle or starting, up to the size."""
        coming = self._idle.qsize() + len(self._spawning)
        if self._waiting > coming and len(self._workers) + len(self._spawning) < self._size:
            self._keep(self._spawn(), self._spawning)

    async def run(self, task: Callable[..., T], arguments: tuple[Any, ...], budget: float) -> T:
        """``task(*arguments)`` in a process; :class:`TimeoutError` after ``budget`` seconds,
        :class:`ProcessDied` when its process ends first: either way the process is replaced."""
        while True:
            self._waiting += 1
            try:
                self._grow()
                worker = await self._idle.get()
            finally:
                self._waiting -= 1
            exchange = asyncio.ensure_future(asyncio.to_thread(_exchange, worker, task, arguments))
            try:
                async with asyncio.timeout(budget):
                    ok, value = await asyncio.shield(exchange)
            except (
                _Gone
            ):  # it died while idle (killed, out of memory, its initializer failed): not the task's
                log.warning(
                    "a worker process had ended (exit code %s); another takes its task", worker.exit_code()
                )
                self._retire(worker, exchange, delay=RESPAWN_DELAY_SECONDS)
                continue
            except BaseException:  # overtime, cancelled, dead: whatever it was doing dies with it
                worker.process.kill()  # its exchange sees the pipe end and returns
                self._retire(worker, exchange)
                raise
            break
        worker.tasks += 1
        if self._max_tasks and worker.tasks >= self._max_tasks:
            self._retire(worker, exchange)
        else:
            self._idle.put_nowait(worker)
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    def _retire(self, worker: _Worker, exchange: asyncio.Future[Any], *, delay: float = 0.0) -> None:
        """Stops ``worker`` once its last ``exchange`` is over (its pipe is closed only then: a descriptor
        closed under a reading thread could be reused by another socket), and starts another."""
        self._workers.discard(worker)
        self._retired.add(worker)

        async def stop() -> None:
            with contextlib.suppress(BaseException):
                await exchange
            await asyncio.to_thread(worker.stop, kill=False)  # a task overrun was killed already
            self._retired.discard(worker)

        self._keep(stop(), self._stopping)
        if not self._closed:
            self._keep(self._spawn(delay), self._spawning)

    @staticmethod
    def _keep(job: Coroutine[Any, Any, None], tasks: set[asyncio.Task[None]]) -> None:
        task = asyncio.get_running_loop().create_task(job)
        tasks.add(task)  # referenced until done
        task.add_done_callback(tasks.discard)

    async def _spawn(self, delay: float = 0.0) -> None:
        await asyncio.sleep(delay)
        while not self._closed:
            try:
                worker = await asyncio.to_thread(self._started)
            except Exception:
                log.exception("a worker process could not be started; trying again")
                await asyncio.sleep(RESPAWN_DELAY_SECONDS)
                continue
            if worker is not None:
                # no longer "starting" once idle: a task that takes it must not count it as coming too
                self._spawning.discard(asyncio.current_task())
                self._idle.put_nowait(worker)
            return

    def _started(self) -> _Worker | None:
        """A new process that said it is ready, counted among the workers; None once the pool is closed
        (in this thread: :meth:`close` kills a process still starting, even if the task that asked for it
        was cancelled, so that nothing waits for its start)."""
        ours, theirs = socket.socketpair()
        with ours, theirs, self._lock:
            if self._closed:
                return None
            code = _BOOTSTRAP.format(descriptor=theirs.fileno(), module=__name__)
            process = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
                [sys.executable, "-P", "-c", code],  # -P: not the working directory, the parent's path
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                process_group=0,
            )
            worker = _Worker(process, Connection(ours.detach()))
            self._starting.add(worker)
        try:
            worker.connection.send(list(sys.path))
            worker.connection.send((self._initializer, self._initargs))
            if not worker.connection.poll(START_SECONDS):
                raise TimeoutError(f"not ready within {START_SECONDS:g} seconds")
            if worker.connection.recv() != READY:
                raise RuntimeError("it did not say it was ready")
        except (OSError, EOFError, TimeoutError, RuntimeError) as error:  # its error is on stderr
            with self._lock:
                self._starting.discard(worker)
            worker.stop(kill=True)
            if self._closed:  # killed by close()
                return None
            reason = f"exit code {worker.exit_code()}" if isinstance(error, EOFError | OSError) else error
            raise RuntimeError(f"a worker process could not start ({reason})") from None
        with self._lock:
            self._starting.discard(worker)
            if not self._closed:
                self._workers.add(worker)
                return worker
        worker.stop(kill=True)
        return None

    def close(self) -> None:
        """Every process ended (asked, then killed if it does not go)."""
        with self._lock:
            self._closed = True
            starting = list(self._starting)
        for worker in starting:  # its start sees the pipe end and stops it
            worker.process.kill()
        for task in self._spawning:
            task.cancel()
        idle = set()
        while not self._idle.empty():
            idle.add(self._idle.get_nowait())
        for worker in self._workers:
            with contextlib.suppress(Exception):
                worker.stop(kill=worker not in idle)  # a busy one is mid-task: nothing to wait for
        self._workers.clear()
        for worker in self._retired:  # being stopped (the loop may end first): reaped here
            worker.process.kill()
            worker.exit_code(JOIN_SECONDS)


def main(connection: Connection) -> None:
    """A worker process, its parent's ``sys.path`` in place (:data:`_BOOTSTRAP`): its initializer, then
    tasks until the pipe ends (the parent stopped it, or died: nothing is left behind)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _end_when_orphaned(os.getppid())
    try:
        initializer, initargs = connection.recv()
    except (EOFError, OSError):
        return
    _serve(connection, initializer, initargs)


def _end_when_orphaned(parent: int, interval: float = 1.0) -> None:
    """A task outlives a parent that was killed (the budget is the parent's to enforce): a timer checks
    every ``interval`` seconds and ends the process then. A timer, not a thread: a thread's stack and
    malloc arena would take about 73 MiB of the reader's ``RLIMIT_AS``; interrupted system calls resume."""

    def check(signum: int, frame: object) -> None:
        if os.getppid() != parent:
            os._exit(0)

    signal.signal(signal.SIGALRM, check)
    signal.setitimer(signal.ITIMER_REAL, interval, interval)
