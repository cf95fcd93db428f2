"""The killable process pool that reads mail: real processes, started from multiprocessing's forkserver."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time

import pytest

from gateway.delivery.processes import ProcessDied, ProcessPool


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
    context = multiprocessing.get_context("forkserver")
    return ProcessPool(processes, context=context, initializer=_nothing, max_tasks=max_tasks)


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
