"""Everything on 127.0.0.1 in one command: the gateway, the Connect emulator and an embedded S3.

Every recipient is routed to the emulated instance with the recipient as the destination, so any mail an
application sends shows up as the contact Connect would create.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from gateway.aws.clients import StaticCredentials
from gateway.observe.metrics import Metrics
from gateway.sandbox.emulator import EmulatedConnect, EmulatorServer
from gateway.sandbox.emulator.connect import Contact
from gateway.sandbox.s3server import SANDBOX_KEY, EmbeddedS3
from gateway.service.gateway import Gateway, until_signalled
from gateway.service.health import add_health_routes
from gateway.settings import (
    AttachmentSettings,
    AwsSettings,
    QueueMode,
    QueueSettings,
    RouteSettings,
    Settings,
    SmtpSettings,
)

__all__ = ["SANDBOX_BUCKET", "SANDBOX_INSTANCE", "run_sandbox", "sandbox_route", "sandbox_settings"]

SANDBOX_INSTANCE = "sandbox-instance"
SANDBOX_BUCKET = "sandbox-attachments"
SANDBOX_CREDENTIALS = StaticCredentials(SANDBOX_KEY, SANDBOX_KEY)


def sandbox_route() -> RouteSettings:
    return RouteSettings(match="*", instance_id=SANDBOX_INSTANCE)


def sandbox_settings(smtp_port: int, connect_url: str, s3_url: str, queue: QueueSettings) -> Settings:
    return Settings(
        smtp=SmtpSettings(host="127.0.0.1", port=smtp_port, hostname="sandbox.localhost"),
        aws=AwsSettings(region="us-east-1", connect_endpoint_url=connect_url, s3_endpoint_url=s3_url),
        attachments=AttachmentSettings(bucket=SANDBOX_BUCKET),
        routes=(sandbox_route(),),
        queue=queue,
    )


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
    mode: QueueMode = QueueMode.SYNC,
) -> None:
    """``sync`` (default): the SMTP reply names the ContactId. ``spool``: as in production, in a temporary
    spool that is removed at the end."""
    s3 = EmbeddedS3().start()
    spool = tempfile.TemporaryDirectory(prefix="mail-gateway-sandbox-")
    try:
        s3.create_bucket(SANDBOX_BUCKET)
        later = _GatewayLater()
        emulator = EmulatorServer(
            EmulatedConnect(on_contact=lambda contact: out(contact_line(contact))),
            s3=s3,
            extra_routes=lambda app: add_health_routes(app, later),
        )
        await emulator.start("127.0.0.1", http_port)
        try:
            queue = QueueSettings(
                mode=mode, path=Path(spool.name), rate_per_second=20, burst=20, min_free_disk=0
            )
            settings = sandbox_settings(smtp_port, emulator.url, s3.url, queue)
            async with Gateway(settings, SANDBOX_CREDENTIALS, serve_http=False) as gateway:
                later.gateway = gateway
                out(f"SMTP       127.0.0.1:{gateway.smtp_port}   (send mail here; any recipient)")
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
