"""The killable process pool that reads mail: real processes, each a fresh interpreter."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gateway.contact import contract
from gateway.delivery import processes, reading
from gateway.delivery.processes import ProcessDied, ProcessPool, UnreadableAnswer
from gateway.delivery.reading import MailReader, MailSource
from gateway.errors import UnreadableError
from gateway.mail import InMemoryContent
from gateway.settings import ContentPolicy

from ..helpers import ROOT, eventually, make_mail
from ..processes import tree


def _nothing() -> None:
    """The processes' initializer."""


def double(number: int) -> int:
    return 2 * number


def pid() -> int:
    return os.getpid()


def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def die() -> None:
    os._exit(7)


def fail() -> None:
    raise ValueError("no")


def pool(processes: int = 1, max_tasks: int = 0) -> ProcessPool:
    return ProcessPool(processes, initializer=_nothing, max_tasks=max_tasks)


async def _with_pool(check: object, processes: int = 1, max_tasks: int = 0) -> None:
    workers = pool(processes, max_tasks)
    workers.start()
    try:
        await asyncio.wait_for(check(workers), 60)  # type: ignore[operator]
    finally:
        workers.close()


def test_answers_and_failures_come_back() -> None:
    async def check(workers: ProcessPool) -> None:
        assert await workers.run(double, (21,), budget=30) == 42
        with pytest.raises(ValueError, match="no"):
            await workers.run(fail, (), budget=30)
        assert await workers.run(double, (2,), budget=30) == 4

    asyncio.run(_with_pool(check))


def test_a_task_over_its_budget_is_killed_with_its_process_and_the_next_one_runs() -> None:
    async def check(workers: ProcessPool) -> None:
        first = await workers.run(pid, (), budget=30)
        with pytest.raises(TimeoutError):
            await workers.run(sleep, (30,), budget=0.5)
        assert await workers.run(pid, (), budget=30) != first
        with pytest.raises(ProcessLookupError):
            os.kill(first, 0)

    asyncio.run(_with_pool(check))


def test_a_task_that_kills_its_process_is_reported_and_the_process_replaced() -> None:
    async def check(workers: ProcessPool) -> None:
        with pytest.raises(ProcessDied) as died:
            await workers.run(die, (), budget=30)
        assert died.value.exitcode == 7
        assert await workers.run(double, (1,), budget=30) == 2

    asyncio.run(_with_pool(check))


def test_a_process_that_died_idle_does_not_fail_the_next_task() -> None:
    """Killed by an operator or the OOM killer between tasks: the next task goes to a fresh process."""

    async def check(workers: ProcessPool) -> None:
        first = await workers.run(pid, (), budget=30)
        os.kill(first, signal.SIGKILL)
        await asyncio.sleep(0.2)
        assert await workers.run(pid, (), budget=30) not in (first, os.getpid())

    asyncio.run(_with_pool(check))


def test_a_process_is_replaced_after_its_share_of_tasks() -> None:
    async def check(workers: ProcessPool) -> None:
        pids = [await workers.run(pid, (), budget=30) for _ in range(4)]
        assert pids[0] == pids[1] and pids[2] == pids[3] and pids[0] != pids[2]

    asyncio.run(_with_pool(check, max_tasks=2))


def test_cancelling_a_task_stops_its_process() -> None:
    async def check(workers: ProcessPool) -> None:
        first = await workers.run(pid, (), budget=30)
        running = asyncio.ensure_future(workers.run(sleep, (30,), budget=60))
        await asyncio.sleep(0.5)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        assert await workers.run(pid, (), budget=30) != first

    asyncio.run(_with_pool(check))


def unpicklable_answer() -> object:
    return threading.Lock()


def _refuse() -> None:
    raise ValueError("not here")


class Unloadable:
    """Pickles in the worker; unpickling it (in the parent) raises."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (_refuse, ())


def unloadable_answer() -> object:
    return Unloadable()


def test_an_answer_that_does_not_unpickle_is_reported_and_the_process_replaced() -> None:
    async def check(workers: ProcessPool) -> None:
        first = await workers.run(pid, (), budget=30)
        with pytest.raises(UnreadableAnswer, match="ValueError"):
            await workers.run(unloadable_answer, (), budget=30)
        assert await workers.run(pid, (), budget=30) != first

    asyncio.run(_with_pool(check))


def test_a_worker_answers_each_task_until_its_pipe_ends() -> None:
    """The loop a worker process runs, here in a thread: answers, failures, an answer that cannot be
    pickled, and the end of its pipe."""
    ours, theirs = multiprocessing.Pipe()
    worker = threading.Thread(target=processes._serve, args=(theirs, _nothing, ()))
    worker.start()
    assert ours.recv() == processes.READY
    ours.send((double, (4,)))
    assert ours.recv() == (True, 8)
    ours.send((fail, ()))
    ok, error = ours.recv()
    assert not ok and isinstance(error, ValueError)
    ours.send((unpicklable_answer, ()))
    ok, error = ours.recv()
    assert not ok and "could not be sent" in str(error)
    ours.close()
    worker.join(10)
    assert not worker.is_alive()


def recurse() -> None:
    raise RecursionError("maximum recursion depth exceeded")


def test_the_reader_reports_what_ends_a_reading_as_unreadable(tmp_path: Path) -> None:
    """Over its budget, a dead reader, an exhausted one: each is the mail's UnreadableError; a mail
    that reads well comes back parsed (the virus scan's parse) and fitted."""
    raw = make_mail(text="hello reader").as_bytes().replace(b"\n", b"\r\n")

    async def check() -> None:
        reader = MailReader(ContentPolicy(), tmp_path, budget=5.0, memory_limit=2 * 1024**3)
        reader.start()
        try:
            parsed = await reader.parse(InMemoryContent(raw))
            assert parsed.text_body is not None and "hello reader" in parsed.text_body
            read = await reader.read(MailSource.of(InMemoryContent(raw)))
            assert read.fitted.mail.text_body is not None
            for task, arguments, reason in (
                (sleep, (30,), "took longer than 5 seconds"),
                (die, (), "died reading it (exit code 7)"),
                (recurse, (), "exhausted the reader: RecursionError"),
            ):
                with pytest.raises(UnreadableError, match=re.escape(reason)):
                    await reader._run(task, arguments)
        finally:
            reader.close()

    asyncio.run(asyncio.wait_for(check(), 60))


def test_the_readers_tasks_read_a_mail_from_its_source(tmp_path: Path) -> None:
    """What a reader process runs, here in this process: the fitted mail, and the parse with its files."""
    data = b"%PDF-1.4\n" + b"x" * 70_000
    raw = make_mail(text="in place", attachments=[("a.pdf", "application/pdf", data)])
    source = MailSource.of(InMemoryContent(raw.as_bytes().replace(b"\n", b"\r\n")))
    reading._limit_memory(0)
    read = reading._in_worker(source, ContentPolicy(), contract.limits(), tmp_path, ())
    [body] = read.bodies
    assert body.size == len(data) and body.path is not None and body.path.parent == tmp_path
    with body.open() as file:
        assert file.read() == data
    read.discard()
    assert not body.path.exists()
    parsed = reading._parse_in_worker(source)
    assert [a.data for a in parsed.attachments] == [data]


def sleep_then_pid(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def _pool_processes() -> list[int]:
    """This process's workers, found by their command line."""
    return [
        child
        for child in tree(os.getpid())
        if b"gateway.delivery.processes import main" in _command_line(child)
    ]


def _command_line(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # ended meanwhile
        return b""


def test_a_pool_keeps_one_process_until_tasks_wait_and_grows_to_its_size_only() -> None:
    """A quiet pool costs one process; tasks that find every process busy start more, never beyond the
    pool's size."""

    async def check(workers: ProcessPool) -> None:
        sequential = {await workers.run(pid, (), budget=30) for _ in range(3)}
        assert len(sequential) == 1 and len(_pool_processes()) == 1
        at_once = await asyncio.gather(*(workers.run(sleep_then_pid, (1.0,), budget=30) for _ in range(4)))
        assert len(set(at_once)) == 2 and sequential < set(at_once)
        assert len(_pool_processes()) == 2

    asyncio.run(_with_pool(check, processes=2))


def fail_the_first_time(marker: str) -> None:
    """An initializer that fails in the first process to run it (as an import that breaks would)."""
    if not os.path.exists(marker):
        Path(marker).touch()
        raise RuntimeError("first start fails")


def test_a_process_that_cannot_start_is_retried_and_no_task_is_blamed(tmp_path: Path) -> None:
    async def check() -> None:
        workers = ProcessPool(1, initializer=fail_the_first_time, initargs=(str(tmp_path / "failed"),))
        workers.start()
        try:
            assert await asyncio.wait_for(workers.run(double, (5,), budget=30), 60) == 10
        finally:
            workers.close()
        assert (tmp_path / "failed").exists()  # the first process did fail

    asyncio.run(check())


def test_a_process_ignores_sigterm_and_finishes_its_task() -> None:
    """systemd stops a unit by sending SIGTERM to every process in it: the parent decides when its readers
    end (after the mails in progress), so a reader mid-mail carries on."""

    async def check(workers: ProcessPool) -> None:
        reader = await workers.run(pid, (), budget=30)
        running = asyncio.ensure_future(workers.run(sleep_then_pid, (1.5,), budget=30))
        await asyncio.sleep(0.5)
        os.kill(reader, signal.SIGTERM)
        assert await running == reader

    asyncio.run(_with_pool(check))


ORPHAN = """
import asyncio, sys, time
from gateway.delivery.processes import ProcessPool
from tests.delivery.test_processes import _nothing, pid, sleep

async def main():
    workers = ProcessPool(1, initializer=_nothing)
    print(await workers.run(pid, (), budget=60), flush=True)
    await workers.run(sleep, (60,), budget=120)

asyncio.run(main())
"""


def test_a_process_whose_parent_was_killed_mid_task_ends_itself() -> None:
    """Only the parent enforces a task's budget: a reader left running a task when its parent is killed
    ends on its own, not when the task does."""
    parent = subprocess.Popen([sys.executable, "-c", ORPHAN], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        reader = int(parent.stdout.readline())
        time.sleep(0.5)  # the 60-second task is running
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()  # the reader holds the pipe too: not waited for
    eventually(lambda: not Path(f"/proc/{reader}").exists() or _zombie(reader), seconds=10)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


SECOND_CHECKOUT = """
import asyncio, sys
sys.path.insert(0, sys.argv[1])
from gateway.delivery.processes import ProcessPool

async def main():
    workers = ProcessPool(1, initializer=int)
    try:
        print(await workers.run(eval, ("__import__('gateway').__file__",), budget=60))
    finally:
        workers.close()

asyncio.run(main())
"""


def test_a_process_runs_the_parents_code_wherever_that_came_from(tmp_path: Path) -> None:
    """The parent's sys.path is in place before the process imports anything of the gateway: a parent
    running another copy of the package (a second checkout, a zipapp) has readers running that copy, not
    whichever one the interpreter would find by itself."""
    shutil.copytree(ROOT / "gateway", tmp_path / "gateway", ignore=shutil.ignore_patterns("__pycache__"))
    found = subprocess.run(
        [sys.executable, "-c", SECOND_CHECKOUT, str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert Path(found.stdout.strip()) == tmp_path / "gateway" / "__init__.py"


def threads() -> int:
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))


def test_a_process_runs_on_one_thread() -> None:
    """A second thread would take its stack and a malloc arena (about 73 MiB) out of the reader's
    RLIMIT_AS, and a mail that fits the configured memory would fail to read."""

    async def check(workers: ProcessPool) -> None:
        assert await workers.run(threads, (), budget=30) == 1

    asyncio.run(_with_pool(check))


def test_closing_the_pool_stops_a_process_still_starting() -> None:
    """A reader whose start hangs (here: its initializer) is killed by close(): the gateway's exit does
    not wait for its start to time out."""

    async def check() -> list[int]:
        workers = ProcessPool(1, initializer=time.sleep, initargs=(120,))
        workers.start()
        await asyncio.sleep(1.0)  # started, not ready
        starting = _pool_processes()
        workers.close()
        return starting

    ended = threading.Event()
    found: list[list[int]] = []

    def run() -> None:
        found.append(asyncio.run(check()))
        ended.set()

    runner = threading.Thread(target=run)
    runner.start()
    assert ended.wait(60), "the event loop's exit waited for the start"
    runner.join()
    assert len(found[0]) == 1
    eventually(lambda: not _pool_processes(), seconds=10)
