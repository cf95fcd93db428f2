"""Everything on 127.0.0.1 in one command: the gateway, the Connect emulator and an embedded S3.

Without a configuration every recipient is routed to the emulated instance with the recipient as the
destination, with no per-client limits (a test suite sends as fast as it can), so any mail an application
sends shows up as the contact Connect would create. With ``--config FILE`` it is that file's gateway (its
routes, limits, attachment and message rules, queue, TLS, AUTH and access) with only what the sandbox
must provide replaced: the listen addresses, the AWS endpoints and the bucket, a route's own included (its
role and endpoints and bucket: staging never reaches production's); it says so at start.

With ``verdicts`` the gateway's own checks run as on an MX: SPF, DKIM, DMARC and ARC through the
configured (or the system's) resolver, spam through rspamd and viruses through clamd (the file's
``[filters]``, else each engine at its Debian address). Mail from this machine is judged as the internet's
would be (no relay network), and an engine that does not answer at start is left out, said once: no
verdict from it, rather than ``PROCESSING_FAILED`` on every mail.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from gateway.aws.clients import StaticCredentials
from gateway.errors import StartupError
from gateway.observe.metrics import Metrics
from gateway.sandbox.emulator import EmulatedConnect, EmulatorServer
from gateway.sandbox.emulator.connect import Contact
from gateway.sandbox.s3server import SANDBOX_KEY, EmbeddedS3
from gateway.service.gateway import Gateway, until_signalled
from gateway.service.health import add_health_routes
from gateway.settings import (
    EVERYWHERE,
    AccessSettings,
    AttachmentSettings,
    AwsSettings,
    FilterSettings,
    HttpSettings,
    QueueMode,
    QueueSettings,
    RouteSettings,
    Settings,
    SmtpSettings,
)

__all__ = [
    "SANDBOX_BUCKET",
    "SANDBOX_INSTANCE",
    "configured_sandbox",
    "run_sandbox",
    "sandbox_route",
    "sandbox_settings",
]

SANDBOX_INSTANCE = "sandbox-instance"
SANDBOX_BUCKET = "sandbox-attachments"
SANDBOX_CREDENTIALS = StaticCredentials(SANDBOX_KEY, SANDBOX_KEY)
# The sandbox's own listener options, named as its users give them (not the file's keys).
SANDBOX_OPTIONS = {"smtp.listen": "--smtp-port", "http.listen": "--http-port"}
# Where Debian's packages listen when installed on the developer's machine.
LOCAL_RSPAMD = "http://127.0.0.1:11333"
LOCAL_CLAMD = Path("/run/clamav/clamd.ctl")
UNLIMITED_MAILS = 1_000_000_000  # per client and minute: the sandbox never throttles a test suite


def sandbox_route() -> RouteSettings:
    return RouteSettings(match="*", instance_id=SANDBOX_INSTANCE)


def sandbox_settings(smtp_port: int, connect_url: str, s3_url: str, queue: QueueSettings) -> Settings:
    """Any recipient, no per-client limits: a test suite's burst from one address is never throttled."""
    return Settings(
        smtp=SmtpSettings(host="127.0.0.1", port=smtp_port, hostname="sandbox.localhost"),
        aws=AwsSettings(region="us-east-1", connect_endpoint_url=connect_url, s3_endpoint_url=s3_url),
        attachments=AttachmentSettings(bucket=SANDBOX_BUCKET),
        routes=(sandbox_route(),),
        queue=queue,
        access=AccessSettings(relay_networks=EVERYWHERE),
    )


def configured_sandbox(settings: Settings, smtp_port: int, connect_url: str, s3_url: str) -> Settings:
    """A configuration file's gateway with the sandbox's listeners, endpoints and bucket, also in place of
    a route's own (else its traffic would reach production's endpoints, role and bucket). A route keeps
    its region and prefix: the emulator's records still show where it would go."""
    tls = settings.tls
    return replace(
        settings,
        routes=tuple(_sandboxed(route) for route in settings.routes),
        smtp=replace(settings.smtp, host="127.0.0.1", port=smtp_port),
        aws=replace(settings.aws, connect_endpoint_url=connect_url, s3_endpoint_url=s3_url),
        attachments=replace(settings.attachments, bucket=SANDBOX_BUCKET),
        tls=replace(tls, implicit_listen=("127.0.0.1", 0) if tls.implicit_listen else None),
        http=HttpSettings(listen=None),  # health and metrics are on the emulator's port
    )


def _sandboxed(route: RouteSettings) -> RouteSettings:
    """The route on the sandbox's endpoints and bucket, under the sandbox's credentials (no role)."""
    return replace(
        route,
        role_arn=None,
        external_id=None,
        bucket=None,
        connect_endpoint_url=None,
        s3_endpoint_url=None,
        sts_endpoint_url=None,
    )


def judging_settings(settings: Settings) -> Settings:
    """``settings`` with every check on, and this machine's mail judged as the internet's.

    The sandbox's usual exemption of every client from the per-client limits (``relay_networks``) would
    also exempt it from the checks, so the limits are lifted instead."""
    filters = settings.filters
    if not filters.enabled:
        filters = FilterSettings(rspamd_url=LOCAL_RSPAMD, clamd_address=LOCAL_CLAMD)
    limits = settings.limits
    return replace(
        settings,
        authentication=replace(settings.authentication, enabled=True),
        filters=filters,
        access=replace(settings.access, relay_networks=()),
        limits=replace(
            limits,
            max_connections_per_client=limits.max_connections,
            max_mails_per_client_per_minute=UNLIMITED_MAILS,
        ),
    )


async def present_engines(settings: Settings, out: Callable[[str], None]) -> Settings:
    """``settings`` without the engines that do not answer now, with one line for each check."""
    from gateway.trust.probe import probe  # the checks' libraries load only when asked for

    filters = settings.filters
    for found in await probe(settings):
        engine = found.item.split(" ")[0]
        if found.ok:
            out(f"Verdicts   {found.item}: {found.detail}")
        elif engine == "dns":
            out(f"Verdicts   {found.item}: {found.detail}; SPF and DMARC will say temperror")
        else:
            gives = "spam" if engine == "rspamd" else "virus"
            out(f"Verdicts   {found.item}: not there ({found.detail}); no {gives} verdict")
            if engine == "rspamd":
                filters = replace(filters, rspamd_url=None)
            else:
                filters = replace(filters, clamd_address=None)
    return replace(settings, filters=filters)


def contact_line(contact: Contact) -> str:
    request = contact.request
    raw = request["EmailMessage"]["RawMessage"]
    files = len(request.get("Attachments", []))
    return (
        f"contact {contact.contact_id}  from {request['FromEmailAddress']['EmailAddress']}"
        f"  to {request['DestinationEmailAddress']}  subject {raw['Subject']!r}  attachments {files}"
    )


async def run_sandbox(
    smtp_port: int = 2525,
    http_port: int = 8025,
    out: Callable[[str], None] = print,
    mode: QueueMode | None = None,
    config: tuple[Path, Settings] | None = None,
    verdicts: bool = False,
    allowed_hosts: Sequence[str] = (),
) -> None:
    """``sync`` (the default without a configuration): the SMTP reply names the ContactId. ``spool``: as
    in production, in a temporary spool that is removed at the end. ``config``: a file and its settings,
    whose own queue (mode and path) is used unless ``mode`` is given. ``verdicts``: the checks on.
    ``allowed_hosts``: names the staging page answers to besides 127.0.0.1 and localhost."""
    region = config[1].aws.region if config else "us-east-1"
    s3 = EmbeddedS3(region=region).start()
    spool = tempfile.TemporaryDirectory(prefix="mail-gateway-sandbox-")
    try:
        s3.create_bucket(SANDBOX_BUCKET)
        later = _GatewayLater()
        emulator = EmulatorServer(
            EmulatedConnect(on_contact=lambda contact: out(contact_line(contact))),
            s3=s3,
            extra_routes=lambda app: add_health_routes(app, later),
            allowed_hosts=allowed_hosts,
        )
        try:
            await emulator.start("127.0.0.1", http_port)
        except OSError as error:
            problem = f"cannot listen on 127.0.0.1:{http_port}: {StartupError.reason(error)}"
            raise StartupError("--http-port", problem) from None
        try:
            if config is None:
                queue = QueueSettings(
                    mode=mode or QueueMode.SYNC,
                    path=Path(spool.name),
                    rate_per_second=20,
                    burst=20,
                    min_free_disk=0,
                )
                settings = sandbox_settings(smtp_port, emulator.url, s3.url, queue)
            else:
                settings = configured_sandbox(config[1], smtp_port, emulator.url, s3.url)
                if mode is not None:
                    settings = replace(settings, queue=replace(settings.queue, mode=mode))
                if settings.queue.mode == QueueMode.SQS:  # one gateway: its spool stands in for the queue
                    queue = replace(settings.queue, mode=QueueMode.SPOOL, path=Path(spool.name))
                    settings = replace(settings, queue=queue)
                    out("Queue      the file's shared queue (sqs) runs as a spool here: one gateway, no SQS")
            if verdicts:
                settings = await present_engines(judging_settings(settings), out)
            async with _SandboxGateway(settings, SANDBOX_CREDENTIALS, serve_http=False) as gateway:
                later.gateway = gateway
                if config is not None:
                    out(_provided(config[0], settings))
                out(f"SMTP       127.0.0.1:{gateway.smtp_port}   (send mail here; {_who(settings)})")
                if gateway.smtp is not None and gateway.smtp.implicit_tls_port is not None:
                    out(f"SMTPS      127.0.0.1:{gateway.smtp.implicit_tls_port}   (implicit TLS)")
                out(f"Connect    {emulator.url}   (emulator; contacts at {emulator.url}/_emulator/contacts)")
                out(f"S3         {s3.url}   (bucket {SANDBOX_BUCKET})")
                out(f"Metrics    {emulator.url}/metrics   (health: /healthz, /readyz)")
                out("Ready. Ctrl-C stops.")
                await until_signalled()
        finally:
            await emulator.stop()
    finally:
        s3.stop()
        spool.cleanup()


class _SandboxGateway(Gateway):
    """The gateway, with start-up errors naming the sandbox's own options (``--smtp-port``)."""

    async def __aenter__(self) -> Gateway:
        try:
            return await super().__aenter__()
        except StartupError as error:
            option = SANDBOX_OPTIONS.get(error.key)
            if option is None:
                raise
            raise StartupError(option, error.problem) from None


def _provided(path: Path, settings: Settings) -> str:
    return (
        f"Config     {path}: everything from the file (queue mode {settings.queue.mode}) except what the "
        f"sandbox provides: the listen addresses, the AWS endpoints (emulated) and the bucket, each route's "
        "own role, endpoints and bucket included"
    )


def _who(settings: Settings) -> str:
    if settings.routes == (sandbox_route(),):
        return "any recipient"
    return f"the file's {len(settings.routes)} route(s)"


class _GatewayLater:
    """The sandbox's health routes live on the emulator's port, which starts before the gateway."""

    def __init__(self) -> None:
        self.gateway: Gateway | None = None
        self._idle = Metrics()

    @property
    def metrics(self) -> Metrics:
        return self.gateway.metrics if self.gateway is not None else self._idle

    def ready(self) -> tuple[bool, str]:
        return self.gateway.ready() if self.gateway is not None else (False, "starting")

    async def refresh_metrics(self) -> None:
        if self.gateway is not None:
            await self.gateway.refresh_metrics()
