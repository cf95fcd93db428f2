"""Open files, the listen backlog and the event loop: what the process takes from the machine at start."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import resource
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.errors import StartupError
from gateway.frontdoor.smtp import SmtpServer
from gateway.service.resources import event_loop_factory, prepare, raise_open_files, somaxconn
from gateway.settings import AttachmentSettings, AwsSettings, EventLoop, LimitSettings, Settings, SmtpSettings

from ..helpers import RecordingSink, make_door, unavailable


def test_the_soft_open_files_limit_is_raised_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
    try:
        before, after = raise_open_files()
        assert before == min(256, hard)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == after
        assert after == hard or hard == resource.RLIM_INFINITY
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_somaxconn_is_read_where_the_kernel_says_it(tmp_path: Path) -> None:
    (tmp_path / "somaxconn").write_text("4096\n")
    assert somaxconn(tmp_path / "somaxconn") == 4096
    assert somaxconn(tmp_path / "missing") is None


def test_a_backlog_beyond_the_kernels_cap_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    cap = somaxconn()
    if cap is None:
        pytest.skip("this kernel does not say its somaxconn")  # not Linux
    limits = LimitSettings(max_connections=10, backlog=cap + 1)
    settings = Settings(SmtpSettings(), AwsSettings(), AttachmentSettings("b-1"), (), limits=limits)
    with caplog.at_level(logging.INFO, logger="gateway.service.resources"):
        prepare(settings)
    assert f"listen backlog {cap + 1} is capped by the kernel at net.core.somaxconn = {cap}" in caplog.text


async def test_the_listener_asks_the_kernel_for_the_configured_backlog() -> None:
    """``ss`` shows a listening socket's backlog as its Send-Q."""
    ss = shutil.which("ss")
    if ss is None:
        unavailable("ss (iproute2) is not installed")
    door = make_door(RecordingSink(), (), limits=LimitSettings(max_connections=3, backlog=77))
    server = SmtpServer(door)
    await server.start()
    try:
        listing = await asyncio.to_thread(
            subprocess.run,
            [ss, "-ltnH", f"sport = :{server.port}"],
            capture_output=True,
            text=True,
            check=True,
        )
        [line] = listing.stdout.splitlines()
        assert line.split()[2] == "77"
    finally:
        await server.stop()


def test_the_event_loop_is_uvloop_when_chosen_or_installed() -> None:
    assert event_loop_factory(EventLoop.ASYNCIO) is None
    if importlib.util.find_spec("uvloop") is None:
        assert event_loop_factory(EventLoop.AUTO) is None
        with pytest.raises(StartupError, match=r"smtp\.event_loop: uvloop is not installed"):
            event_loop_factory(EventLoop.UVLOOP)
    else:
        factory = event_loop_factory(EventLoop.AUTO)
        assert factory is not None
        assert factory is event_loop_factory(EventLoop.UVLOOP)
        loop = factory()
        try:
            assert not isinstance(loop, asyncio.SelectorEventLoop)
        finally:
            loop.close()
