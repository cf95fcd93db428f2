"""``mail-gateway``: serve, reload, sandbox, emulate, check, queue, passwd, parse.

Whatever goes wrong at start ends in one line on standard error naming its cause, and a non-zero status:
2 for a configuration file that is wrong (:class:`ConfigError`), 1 for one that cannot be put to work
here (:class:`StartupError`: a port in use, a certificate that does not load) or a file that cannot be
read. Output piped into a command that stops reading (``| head``) ends quietly.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gateway.addresses import AddressError, parse_address
from gateway.aws.attachments import DryRunStore
from gateway.aws.placement import placement, route_attachments
from gateway.config import load_config
from gateway.contact.routing import Router
from gateway.delivery.deliverer import Deliverer, Place, unique_targets
from gateway.delivery.reading import read_here
from gateway.errors import ConfigError, RefusedError, StartupError
from gateway.mail import InMemoryContent, Target
from gateway.observe.mail_log import configure_logging
from gateway.settings import (
    CONNECT_DEFAULT_FILE_TYPES,
    AttachmentSettings,
    AwsSettings,
    QueueMode,
    RouteSettings,
    Settings,
    SmtpSettings,
)

__all__ = ["main"]

PARSE_FALLBACK_RECIPIENT = "recipient@example.com"
ALLOWED_HOST_HELP = (
    "a name the staging page may be reached by (behind a proxy, say), besides IP addresses, localhost and "
    "the listening host; other names are refused, against DNS rebinding (repeatable)"
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mail-gateway", description="An SMTP gateway for Amazon Connect's email channel."
    )
    parser.add_argument(
        "--log-level",
        type=str.lower,
        choices=("debug", "info", "warning", "error"),
        help="default: the configuration's [log] level, else info",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", required=True, type=Path, help="the TOML configuration file")

    sandbox = commands.add_parser("sandbox", help="gateway + Connect emulator + S3, all on 127.0.0.1")
    sandbox.add_argument("--smtp-port", type=int, default=2525)
    sandbox.add_argument("--http-port", type=int, default=8025, help="the emulator's port")
    sandbox.add_argument(
        "--mode",
        type=QueueMode,
        choices=(QueueMode.SYNC, QueueMode.SPOOL),
        help="sync: the SMTP reply names the contact (default without --config); spool: queued as in "
        "production (default with --config: the file's [queue] mode)",
    )
    sandbox.add_argument(
        "--config",
        type=Path,
        help="a gateway configuration (routes, limits, attachments...) to run against the emulator; the "
        "sandbox provides the listen addresses, the AWS endpoints and the bucket (a route's own too)",
    )
    sandbox.add_argument(
        "--verdicts",
        action="store_true",
        help="run the sender checks (SPF, DKIM, DMARC, ARC) and the spam and virus engines that answer "
        "(the file's [filters], else rspamd and clamd at their Debian addresses) on this machine's mail",
    )
    sandbox.add_argument("--allowed-host", action="append", default=[], help=ALLOWED_HOST_HELP)

    emulate = commands.add_parser("emulate", help="the Connect email emulator (and an S3) alone")
    emulate.add_argument("--host", default="127.0.0.1")
    emulate.add_argument("--allowed-host", action="append", default=[], help=ALLOWED_HOST_HELP)
    emulate.add_argument("--port", type=int, default=8025)
    emulate.add_argument("--s3-port", type=int, help="also run an embedded S3 on this port")
    emulate.add_argument("--bucket", default="sandbox-attachments", help="bucket created in the embedded S3")
    emulate.add_argument("--instance", action="append", default=[], help="known instance id (repeatable)")
    emulate.add_argument(
        "--address",
        action="append",
        default=[],
        help="address of the instance, e.g. *@example.com (repeatable)",
    )

    emulate.add_argument("--flow", action="append", default=[], help="known contact flow id (repeatable)")
    emulate.add_argument(
        "--file-types",
        help="attachment file types the instance allows, comma-separated (.pdf,.png) or * "
        "(default: Connect's default list)",
    )
    for name, kind, help_text in (
        ("--error-rate", float, "share of calls answered 500 (half of them after the contact was made)"),
        ("--throttle-rps", float, "answer ThrottlingException beyond this many calls per second"),
        ("--latency-ms", int, "delay every answer"),
        ("--s3-error-rate", float, "share of embedded-S3 requests answered 503 SlowDown"),
    ):
        emulate.add_argument(name, type=kind, default=0, help=help_text)

    queue = commands.add_parser(
        "queue", help="look at and act on the spool or the shared queue (safe beside running gateways)"
    )
    queue.add_argument("--config", required=True, type=Path, help="the gateway's configuration file")
    queue.add_argument("--json", action="store_true", help="machine-readable output for list and show")
    queue.add_argument("action", choices=("list", "show", "retry", "delete", "move"))
    queue.add_argument("id", nargs="?", help="queue id (show, retry, delete)")
    queue.add_argument(
        "--all-dead", action="store_true", help="with retry: every mail in the dead-letter area"
    )
    queue.add_argument(
        "--to",
        choices=("sqs",),
        help="with move: the stopped spool at [queue] path into the shared queue the file names (mode sqs)",
    )

    check = commands.add_parser("check", help="check the configuration and the AWS side it names")
    check.add_argument("--config", required=True, type=Path, help="the TOML configuration file")

    reload = commands.add_parser(
        "reload",
        help="check a configuration, then have the running gateway load it (SIGHUP via its pid file)",
    )
    reload.add_argument("--config", required=True, type=Path, help="the file the gateway serves with")

    passwd = commands.add_parser("passwd", help="print a credentials-file line (user:bcrypt-hash) for [auth]")
    passwd.add_argument("user")
    passwd.add_argument("--stdin", action="store_true", help="read the password from standard input")

    parse = commands.add_parser("parse", help="print the StartEmailContact request(s) a mail file would make")
    parse.add_argument("file", type=Path)
    parse.add_argument("--rcpt", action="append", default=[], help="envelope recipient (repeatable)")
    parse.add_argument("--config", type=Path, help="use this file's routes (default: the sandbox route)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except BrokenPipeError:
        # The reader went away (``| head``): nothing more to say, and nothing to say it to. Python would
        # complain again when it flushes standard output at exit; point it at /dev/null first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _run(args: argparse.Namespace) -> int:
    # Terminals get text until a configuration says otherwise; ``serve`` and ``check`` follow its [log].
    configure_logging(args.log_level or "info", "text")
    try:
        if args.command == "serve":
            return _serve(_configured(args), args.config)
        if args.command == "sandbox":
            from gateway.sandbox.run import run_sandbox

            config = (args.config, _configured(args)) if args.config else None
            asyncio.run(
                run_sandbox(
                    args.smtp_port,
                    args.http_port,
                    out=_say,
                    mode=args.mode,
                    config=config,
                    verdicts=args.verdicts,
                    allowed_hosts=args.allowed_host,
                )
            )
            return 0
        if args.command == "emulate":
            asyncio.run(_emulate(args))
            return 0
        if args.command == "queue":
            return _queue(args)
        if args.command == "passwd":
            return _passwd(args)
        if args.command == "check":
            return _check(_configured(args))
        if args.command == "reload":
            return _reload(_configured(args))
        return _parse(args)
    except ConfigError as error:
        print(f"mail-gateway: {error}", file=sys.stderr)
        return 2
    except StartupError as error:
        print(f"mail-gateway: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        raise
    except OSError as error:  # a file that cannot be read, a port the sandbox cannot have
        print(f"mail-gateway: {_os_error(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _configured(args: argparse.Namespace) -> Settings:
    """The configuration file's settings, with logging as its [log] table says."""
    settings = load_config(args.config)
    log = settings.log
    configure_logging(args.log_level or log.level, log.format, log.personal_data)
    return settings


def _os_error(error: OSError) -> str:
    """``/x.eml: no such file or directory``: the file named, the system's words."""
    reason = StartupError.reason(error)
    return f"{error.filename}: {reason}" if error.filename else reason


def _say(line: str) -> None:
    print(line, flush=True)


def _serve(settings: Settings, path: Path) -> int:
    """Serve until SIGTERM; SIGHUP reloads ``path`` (:mod:`gateway.service.reload`)."""
    from gateway.service.gateway import Gateway, until_signalled
    from gateway.service.reload import pid_written, reload_config
    from gateway.service.resources import event_loop_factory, prepare

    factory = event_loop_factory(settings.smtp.event_loop)
    prepare(settings)

    async def run() -> None:
        async with Gateway(settings) as gateway:
            log = logging.getLogger("gateway")
            loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
            log.info("listening for SMTP on %s:%d (%s)", settings.smtp.host, gateway.smtp_port, loop)
            if gateway.http is not None and settings.http.listen is not None:
                log.info("metrics and health on http://%s:%d", settings.http.listen[0], gateway.http.port)
            # What start-up built (imports, botocore's models, clients) lives as long as the process: the
            # collector no longer walks it at every full collection (half the collector's time here).
            gc.freeze()
            with pid_written(settings):
                await until_signalled(hangup=lambda: reload_config(gateway, path))

    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(run())
    return 0


def _reload(settings: Settings) -> int:
    """``check`` the file, then SIGHUP to the gateway of its pid file: a file that fails is never sent."""
    from gateway.service.reload import signal_reload

    if _check(settings) != 0:
        print("mail-gateway: not reloaded: the configuration does not pass its checks", file=sys.stderr)
        return 1
    pid = signal_reload(settings)
    print(f"asked the gateway (pid {pid}) to reload; its log says whether it did")
    return 0


async def _emulate(args: argparse.Namespace) -> None:
    from gateway.sandbox.emulator import EmulatedConnect, EmulatorServer
    from gateway.sandbox.emulator.faults import FaultInjector, Faults
    from gateway.service.gateway import until_signalled

    s3 = None
    if args.s3_port is not None:
        from gateway.sandbox.s3server import EmbeddedS3

        s3 = EmbeddedS3(args.host, args.s3_port).start()
        s3.create_bucket(args.bucket)
        _say(f"S3         {s3.url}   (bucket {args.bucket})")
    try:
        faults = Faults.from_json(
            {
                "error_rate": args.error_rate,
                "throttle_rps": args.throttle_rps,
                "latency_ms": args.latency_ms,
                "s3_error_rate": args.s3_error_rate,
            }
        )
    except ValueError as error:
        raise ConfigError(f"emulate: {error}") from None
    file_types = None if args.file_types == "*" else CONNECT_DEFAULT_FILE_TYPES
    if args.file_types and args.file_types != "*":
        file_types = tuple(
            "." + t.strip().lower().lstrip(".") for t in args.file_types.split(",") if t.strip()
        )
    connect = EmulatedConnect(args.instance, args.address, file_types=file_types, flows=args.flow)
    server = EmulatorServer(connect, FaultInjector(faults), s3, allowed_hosts=args.allowed_host)
    await server.start(args.host, args.port)
    _say(f"Connect    http://{args.host}:{server.port}   (contacts at /_emulator/contacts)")
    try:
        await until_signalled()
    finally:
        await server.stop()
        if s3 is not None:
            s3.stop()


def _check(settings: Settings) -> int:
    from gateway.service.preflight import Status, run_checks

    checks = asyncio.run(run_checks(settings))
    for check in checks:
        _say(str(check))
    return 1 if any(check.status == Status.FAIL for check in checks) else 0


def _passwd(args: argparse.Namespace) -> int:
    import getpass

    from gateway.frontdoor.credentials import hash_password

    if ":" in args.user or not args.user.strip():
        print("mail-gateway: a user name may not be empty or contain ':'", file=sys.stderr)
        return 2
    if args.stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif _has_terminal():
        password = getpass.getpass(f"Password for {args.user}: ")
    else:
        print(
            "mail-gateway: no terminal to ask for the password on; give it on standard input with --stdin",
            file=sys.stderr,
        )
        return 2
    if not password:
        print("mail-gateway: an empty password is not allowed", file=sys.stderr)
        return 2
    print(f"{args.user}:{hash_password(password)}")
    return 0


def _has_terminal() -> bool:
    """Whether getpass can ask without echo (it reads /dev/tty, else falls back to standard input)."""
    try:
        os.close(os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY))
    except OSError:
        return False
    return True


def _queue(args: argparse.Namespace) -> int:
    from gateway.delivery.admin import run_queue_command
    from gateway.delivery.spool import Spool

    settings = load_config(args.config)
    if settings.queue.mode == QueueMode.SQS or args.action == "move":
        return _shared_queue(settings, args)
    try:
        spool = Spool(settings.queue.path, create=False)
    except FileNotFoundError:
        print(f"mail-gateway: no spool at {settings.queue.path} (queue.path)", file=sys.stderr)
        return 1
    try:
        return run_queue_command(spool, args.action, args.id, args.all_dead, _say, args.json)
    finally:
        spool.close()


def _shared_queue(settings: Settings, args: argparse.Namespace) -> int:
    from gateway.delivery.shared.admin import run_shared_queue_command
    from gateway.errors import DeliveryError

    if args.action == "move" and (args.to != "sqs" or settings.queue.mode != QueueMode.SQS):
        print(
            'mail-gateway: queue move --to sqs: the file must name the shared queue (queue.mode = "sqs", '
            "queue_url, table) and the spool to empty into it (queue.path)",
            file=sys.stderr,
        )
        return 2
    try:
        return asyncio.run(
            run_shared_queue_command(settings, args.action, args.id, args.all_dead, _say, args.json)
        )
    except DeliveryError as error:
        print(f"mail-gateway: the shared queue: {error}", file=sys.stderr)
        return 1


class _NothingSent:
    """``parse`` builds requests and sends none."""

    async def start(self, request: Mapping[str, Any]) -> str:
        raise RuntimeError("mail-gateway parse sends nothing")


class _DryRunPlaces:
    """Each route's place as the running gateway has it (its region, endpoints, bucket and prefix), so
    the printed S3 URLs and original's locator are the ones its contacts would carry."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    async def __call__(self, route: RouteSettings) -> Place:
        where = placement(route, self._settings.aws)
        attachments = route_attachments(route, self._settings.attachments)
        store = DryRunStore(attachments, where.aws)
        return Place(store, _NothingSent(), attachments, where.quota, where)


def _parse(args: argparse.Namespace) -> int:
    from gateway.sandbox.run import sandbox_route

    if args.config:
        settings = load_config(args.config)
    else:
        settings = Settings(
            smtp=SmtpSettings(hostname="localhost"),
            aws=AwsSettings(),
            attachments=AttachmentSettings("example-bucket"),
            routes=(sandbox_route(),),
        )
    raw = args.file.read_bytes()
    store = DryRunStore(settings.attachments, settings.aws)
    deliverer = Deliverer(
        store, _NothingSent(), settings.attachments, settings.content_policy, places=_DryRunPlaces(settings)
    )
    read = read_here(raw, settings.content_policy, received=False)  # a file keeps its own line ends
    mail = read.fitted.mail
    router = Router(settings.routes)
    candidates = args.rcpt or [m.address for m in (*mail.to, *mail.cc)] or [PARSE_FALLBACK_RECIPIENT]
    targets = _routable(router, candidates)
    if not targets:
        if args.rcpt:
            print("mail-gateway: no --rcpt address is routed by the configuration", file=sys.stderr)
            return 1
        targets = _routable(router, [PARSE_FALLBACK_RECIPIENT])
    sender = mail.sender.address if mail.sender else ""
    requests = asyncio.run(deliverer.build(InMemoryContent(raw), read, unique_targets(targets), sender))
    print(json.dumps(requests, indent=2, ensure_ascii=False))
    return 0 if requests else 1


def _routable(router: Router, addresses: Sequence[str]) -> list[Target]:
    targets = []
    for address in addresses:
        try:
            targets.append(router.resolve(parse_address(address)))
        except (AddressError, RefusedError) as error:
            print(f"mail-gateway: skipping {address}: {error}", file=sys.stderr)
    return targets


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
