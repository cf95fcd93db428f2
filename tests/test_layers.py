"""The tree's rules hold, and the checks of them can fail: layers, a pure core without I/O, and no clocks.

The import contracts live in ``pyproject.toml`` (``[tool.importlinter]``) and ``lint-imports`` runs them in
``.ci/run``; these tests run them too, then feed them a copy of the package with a wrong import, which
they must refuse. "No clocks" in the pure core is an AST check: a call such as ``time.time()`` or
``datetime.now()`` there would make the same mail parse differently from one moment to the next.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import ROOT

PURE = ("message", "contact")
CLOCKS = {
    ("time", "time"),
    ("time", "time_ns"),
    ("time", "monotonic"),
    ("time", "monotonic_ns"),
    ("time", "perf_counter"),
    ("time", "process_time"),
    ("time", "localtime"),
    ("time", "gmtime"),
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
    ("random", "random"),
}


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with the project's contracts, on the package found under ``root``."""
    command = [str(Path(sys.executable).with_name("lint-imports")), "--config", str(ROOT / "pyproject.toml")]
    environment = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(command, cwd=root, env=environment, capture_output=True, text=True, check=False)


def clock_calls(source: str) -> Iterator[str]:
    """``module.function(...)`` calls that read a clock (or chance), as ``module.function``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", None)
            if (name, node.func.attr) in CLOCKS:
                yield f"{name}.{node.func.attr}"


def test_the_import_contracts_hold() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


@pytest.mark.parametrize(
    ("module", "wrong_import", "contract"),
    [
        ("message/mime.py", "from gateway.delivery import spool", "a lower one never imports a higher one"),
        (
            "contact/request.py",
            "from gateway.frontdoor import smtp",
            "a lower one never imports a higher one",
        ),
        (
            "observe/metrics.py",
            "from gateway.service import gateway",
            "a lower one never imports a higher one",
        ),
        ("trust/policy.py", "from gateway.frontdoor import smtp", "a lower one never imports a higher one"),
        ("message/structure.py", "import asyncio", "does no I/O"),
        ("contact/fitting.py", "import sqlite3", "does no I/O"),
        ("contact/routing.py", "import botocore.session", "does no I/O"),
    ],
)
def test_a_wrong_import_breaks_a_contract(
    tmp_path: Path, module: str, wrong_import: str, contract: str
) -> None:
    copy = tmp_path / "gateway"
    shutil.copytree(ROOT / "gateway", copy, ignore=shutil.ignore_patterns("__pycache__"))
    path = copy / module
    path.write_text(path.read_text() + f"\n{wrong_import}  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    broken = result.stdout.split("Broken contracts")[1]
    assert contract in broken
    assert f"gateway.{module[:-3].replace('/', '.')} -> " in broken  # the wrong import, named


def test_the_pure_core_reads_no_clock() -> None:
    found = {
        f"{path.relative_to(ROOT)}: {call}"
        for package in PURE
        for path in sorted((ROOT / "gateway" / package).rglob("*.py"))
        for call in clock_calls(path.read_text())
    }
    assert found == set()


def test_the_clock_check_sees_a_clock() -> None:
    source = (
        "import time\nfrom datetime import datetime\ndef f():\n    return time.monotonic(), datetime.now()\n"
    )
    assert sorted(clock_calls(source)) == ["datetime.now", "time.monotonic"]
    assert list(clock_calls("from datetime import datetime\ndef f(when: datetime) -> str: ...\n")) == []
