"""Shared fixtures: real servers on loopback ports bound to 0, and an SMTP client speaking over a socket."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from gateway.frontdoor.smtp import SmtpServer
from gateway.replies import Replies
from gateway.sandbox.emulator import EmulatedConnect, EmulatorServer
from gateway.sandbox.s3server import EmbeddedS3
from gateway.service.gateway import Gateway
from gateway.settings import RouteSettings, Settings, SmtpSettings

from .helpers import (
    CREDENTIALS,
    RecordingSink,
    Sandbox,
    SmtpClient,
    make_door,
    make_settings,
    running_sandbox,
    unavailable,
)
from .shared import deploy_stack, embedded_aws


@pytest.fixture(autouse=True)
def _no_real_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never reach for a developer's real AWS account or configuration."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[EmbeddedS3]:
    server = EmbeddedS3().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def aws_url() -> Iterator[str]:
    """moto's S3, SQS, DynamoDB and CloudFormation, serialized, in a process of its own: one per session."""
    with embedded_aws() as url:
        yield url


@pytest.fixture
def stack(aws_url: str) -> dict[str, str]:
    """A stack of deploy/aws/cloudformation.yaml of the test's own: its Outputs (a short visibility
    timeout, so that a mail a stopped gateway held is taken over within seconds)."""
    return deploy_stack(aws_url, VisibilityTimeoutSeconds=4)


@pytest.fixture
def bucket(s3_server: EmbeddedS3) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(name)
    return name


@pytest.fixture
async def emulator() -> AsyncIterator[EmulatorServer]:
    server = EmulatorServer(EmulatedConnect())
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def settings(emulator: EmulatorServer, s3_server: EmbeddedS3, bucket: str) -> Settings:
    return make_settings(emulator, s3_server, bucket)


@pytest.fixture
async def gateway(settings: Settings) -> AsyncIterator[Gateway]:
    async with Gateway(settings, CREDENTIALS) as running:
        yield running


@pytest.fixture
def smtp(gateway: Gateway) -> SmtpClient:
    return SmtpClient(gateway.smtp_port)


@pytest.fixture
async def smarthost() -> AsyncIterator[tuple[SmtpServer, RecordingSink]]:
    capture = RecordingSink(Replies.QUEUED.format(queue_id="captured"))
    smarthost_settings = SmtpSettings(host="127.0.0.1", port=0, hostname="smarthost.test")
    server = SmtpServer(make_door(capture, [RouteSettings(match="*", instance_id="x")], smarthost_settings))
    await server.start()
    yield server, capture
    await server.stop()


CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def _unavailable() -> str | None:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        return "Chromium is not installed (apt-get install chromium chromium-driver; .ci/run does it)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return None


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Debian's headless Chromium driven by selenium (no browser download); its downloads in tmp_path."""
    reason = _unavailable()
    if reason is not None:
        unavailable(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--window-size=1440,900", "--disable-background-networking", "--no-first-run",
        "--disable-extensions", "--disable-sync", "--metrics-recording-only",
    ):  # fmt: skip
        options.add_argument(flag)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    setattr(driver, "downloads", downloads)  # noqa: B010 - where the test finds what the browser saved
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with running_sandbox() as started:
        yield started


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The corpus figures, when the corpus tests ran."""
    from .contact import test_corpus

    stats = test_corpus.STATS
    if "messages" in stats:
        terminalreporter.write_sep("-", "corpus")
        terminalreporter.write_line(
            f"{stats['messages']} mails: {stats['exceptions']} exceptions, {stats['valid']} requests within "
            f"every constraint of the Connect model, {stats['preserved']} of {stats['attachments']} "
            "attachments byte-for-byte preserved"
        )
    if "parse_command_files" in stats:
        terminalreporter.write_line(
            f"mail-gateway parse: a valid request for {stats['parse_command_files']} files"
        )


# Hypothesis: bounded for CI and daily runs; HYPOTHESIS_PROFILE=thorough for a long search. Under CI the
# examples are derandomized: a red run can be replayed, and the coverage gate measures the same paths each
# time (on a developer's machine every run explores anew).
hypothesis_settings.register_profile(
    "bounded",
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=os.environ.get("CI") == "true",
)
hypothesis_settings.register_profile("thorough", max_examples=5000, deadline=None)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "bounded"))
