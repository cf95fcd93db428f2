"""The memory the gateway may use: a container's cgroup limit (v2 or v1) when it is below the RAM."""

from __future__ import annotations

from gateway.config.machine import memory_limit, physical_memory, read_memory_limit

GIB = 1024**3
RAM = 24 * GIB


def test_a_cgroup_v2_limit_below_the_ram_is_the_memory() -> None:
    assert memory_limit(RAM, cgroup_v2="2147483648\n") == 2 * GIB
    assert memory_limit(RAM, cgroup_v2="2147483648\n", cgroup_v1="1073741824\n") == 2 * GIB


def test_no_v2_limit_is_the_ram() -> None:
    assert memory_limit(RAM, cgroup_v2="max\n") == RAM


def test_a_cgroup_v1_limit_counts_when_there_is_no_v2() -> None:
    assert memory_limit(RAM, cgroup_v1="536870912\n") == GIB // 2
    assert memory_limit(RAM, cgroup_v2="max\n", cgroup_v1="536870912\n") == GIB // 2


def test_v1_says_no_limit_with_a_huge_number_which_the_ram_bounds() -> None:
    assert memory_limit(RAM, cgroup_v1="9223372036854771712\n") == RAM


def test_missing_or_unreadable_files_limit_nothing() -> None:
    assert memory_limit(RAM) == RAM
    assert memory_limit(RAM, cgroup_v2="", cgroup_v1="garbage") == RAM
    assert memory_limit(RAM, cgroup_v2="0\n") == RAM


def test_this_machine_reads_a_limit_no_larger_than_its_ram() -> None:
    assert 0 < read_memory_limit() <= physical_memory()
