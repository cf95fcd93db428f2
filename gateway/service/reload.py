"""A new configuration without a restart (SIGHUP, ``mail-gateway reload``): checked whole, then put to work.

The file is parsed and its local checks run (the TLS certificate and key, the AUTH credentials load)
before anything changes; a file that fails leaves the running configuration in place, says why in the
log and counts ``mail_gateway_config_reload_failures_total``. A good one applies to what starts after
it: new SMTP sessions (routes, limits, access, AUTH, TLS), new deliveries (each route's region, role
and bucket, the quotas). Sessions in progress finish under the configuration they started with, and the
spool is not touched. What the running process cannot change (its listeners, its spool, its queue mode
and workers, the trust checks' engines; in sqs mode the shared queue, its table and prefix, and the
``[aws]`` region and endpoints it is reached through) is kept as it was and named in a warning: those
need a restart.

``mail-gateway reload --config PATH`` runs ``check`` on the file (the AWS side too), then sends SIGHUP to
the pid in ``<queue.path>/mail-gateway.pid``, which ``serve`` writes at start (and removes at the end).
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.config import load_config
from gateway.errors import ConfigError, StartupError
from gateway.settings import QueueMode, Settings

if TYPE_CHECKING:
    from gateway.service.gateway import Gateway

__all__ = [
    "PID_FILE",
    "RESTART_ONLY",
    "SHARED_QUEUE_RESTART_ONLY",
    "needs_restart",
    "pid_file",
    "pid_written",
    "reload_config",
    "signal_reload",
    "with_restart_settings_of",
]

PID_FILE = "mail-gateway.pid"

log = logging.getLogger(__name__)

# What a running gateway keeps until it restarts, by the name an operator finds in the file.
RESTART_ONLY: dict[str, Callable[[Settings], Any]] = {
    "smtp.listen": lambda s: (s.smtp.host, s.smtp.port),
    "smtp.event_loop": lambda s: s.smtp.event_loop,
    "limits.backlog (the listen queue, twice max_connections by default)": lambda s: s.limits.listen_backlog,
    "tls.implicit_listen": lambda s: s.tls.implicit_listen,
    "http.listen": lambda s: s.http.listen,
    "queue.path": lambda s: s.queue.path,
    "queue.mode": lambda s: s.queue.mode,
    "queue (workers, readers, retries, ages)": lambda s: replace(  # the rest of [queue]
        s.queue,
        rate_per_second=0.0,
        burst=0,
        path=Path(),
        mode=QueueMode.SPOOL,
        queue_url=None,
        table=None,
        prefix="",
    ),
    "[authentication], [filters] and [dns]": lambda s: (s.authentication, s.filters, s.dns),
    "[message] and the file types and sizes of [attachments]": lambda s: s.content_policy,
    "[log]": lambda s: s.log,
}

# What the shared queue was opened with (compared when both run in sqs mode: a changed mode says it all).
SHARED_QUEUE_RESTART_ONLY: dict[str, Callable[[Settings], Any]] = {
    "queue.queue_url": lambda s: s.queue.queue_url,
    "queue.table": lambda s: s.queue.table,
    "queue.prefix": lambda s: s.queue.prefix,
    "aws.region (where the shared queue is reached)": lambda s: s.aws.region,
    "aws.sqs_endpoint_url": lambda s: s.aws.sqs_endpoint_url,
    "aws.dynamodb_endpoint_url": lambda s: s.aws.dynamodb_endpoint_url,
    # Raw mail is written where the queue was opened: these name that place.
    "attachments.bucket (where raw mail waits)": lambda s: s.attachments.bucket,
    "attachments.sse, attachments.kms_key_id": lambda s: (s.attachments.sse, s.attachments.kms_key_id),
    "aws.s3_endpoint_url (the shared queue's)": lambda s: s.aws.s3_endpoint_url,
}

# Sync mode parks automatic mail in a spool opened at start only if the policy was "drop" then.
SYNC_RESTART_ONLY: dict[str, Callable[[Settings], Any]] = {
    "automatic.policy (in sync mode, parking needs the spool opened at start)": lambda s: s.automatic.policy,
}


def needs_restart(running: Settings, new: Settings) -> list[str]:
    """The settings that differ but cannot change without a restart."""
    checked = dict(RESTART_ONLY)
    if running.queue.mode == new.queue.mode == QueueMode.SQS:
        checked |= SHARED_QUEUE_RESTART_ONLY
    if running.queue.mode == new.queue.mode == QueueMode.SYNC:
        checked |= SYNC_RESTART_ONLY
    return [name for name, value in checked.items() if value(running) != value(new)]


def with_restart_settings_of(running: Settings, new: Settings) -> Settings:
    """``new``, with what cannot change yet kept as it runs (so that health and metrics stay true)."""
    aws = replace(
        new.aws,
        sqs_endpoint_url=running.aws.sqs_endpoint_url,
        dynamodb_endpoint_url=running.aws.dynamodb_endpoint_url,
    )
    attachments = replace(
        new.attachments,
        allowed_file_types=running.attachments.allowed_file_types,
        max_file_size=running.attachments.max_file_size,
        max_total_size=running.attachments.max_total_size,
    )
    automatic = new.automatic
    if running.queue.mode == QueueMode.SQS:  # where the shared queue lives: routes that inherit it stay too
        aws = replace(aws, region=running.aws.region, s3_endpoint_url=running.aws.s3_endpoint_url)
        attachments = replace(
            attachments,
            bucket=running.attachments.bucket,
            sse=running.attachments.sse,
            kms_key_id=running.attachments.kms_key_id,
        )
    if running.queue.mode == QueueMode.SYNC:
        automatic = replace(new.automatic, policy=running.automatic.policy)
    return replace(
        new,
        aws=aws,
        automatic=automatic,
        smtp=replace(
            new.smtp, host=running.smtp.host, port=running.smtp.port, event_loop=running.smtp.event_loop
        ),
        limits=replace(new.limits, backlog=running.limits.listen_backlog),
        tls=replace(new.tls, implicit_listen=running.tls.implicit_listen),
        http=running.http,
        queue=replace(running.queue, rate_per_second=new.queue.rate_per_second, burst=new.queue.burst),
        authentication=running.authentication,
        filters=running.filters,
        dns=running.dns,
        message=running.message,
        log=running.log,
        attachments=attachments,
    )


async def reload_config(gateway: Gateway, path: Path) -> bool:
    """Load ``path`` and put it to work; False (and the old configuration serving) when it is refused."""
    try:
        new = load_config(path)
        restart = needs_restart(gateway.settings, new)
        await gateway.reload(with_restart_settings_of(gateway.settings, new))
    except (ConfigError, StartupError) as error:
        gateway.metrics.config_reload_failures.inc()
        log.error("configuration not reloaded, the running one stays: %s", error)
        return False
    gateway.metrics.config_reloads.inc()
    if restart:
        log.warning(
            "configuration reloaded from %s, but these settings need a restart to change: %s",
            path,
            "; ".join(restart),
        )
    else:
        log.info("configuration reloaded from %s: %d route(s)", path, len(new.routes))
    return True


def pid_file(settings: Settings) -> Path:
    """Where ``serve`` keeps its pid: beside the spool, which is this gateway's own directory."""
    return settings.queue.path / PID_FILE


@contextmanager
def pid_written(settings: Settings) -> Iterator[None]:
    """The pid file while the gateway runs; a directory it may not write is a warning (then reload with
    ``kill -HUP`` or ``systemctl reload``), never a reason not to serve."""
    path = pid_file(settings)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{os.getpid()}\n")
    except OSError as error:
        log.warning("no pid file at %s (%s): reload with kill -HUP", path, StartupError.reason(error))
        yield
        return
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def signal_reload(settings: Settings) -> int:
    """SIGHUP to the gateway whose pid file ``settings`` names; its pid. OSError when there is none."""
    path = pid_file(settings)
    text = path.read_text().strip()
    if not text.isdigit():
        raise OSError(f"{path} holds no pid")
    pid = int(text)
    command = Path(f"/proc/{pid}/cmdline")
    if command.exists() and b"gateway" not in command.read_bytes():
        # A pid file left by a gateway that was killed: SIGHUP would end whatever process has its pid now.
        raise OSError(f"{path} names pid {pid}, which is not a mail gateway (left by one that was killed?)")
    os.kill(pid, signal.SIGHUP)
    return pid
