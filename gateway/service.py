"""The running gateway, assembled: AWS clients, the queue and its workers, routing and the SMTP front door.

Shutdown runs in reverse: the listener closes first (no new mail), the workers get their grace period to
finish deliveries under way, then the spool and the AWS clients close.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from types import TracebackType

from gateway.attachments import S3AttachmentStore
from gateway.aws import AwsClients, StaticCredentials
from gateway.config import Settings
from gateway.connect import ConnectContacts
from gateway.delivery import Deliverer, DeliverNow
from gateway.governor import Governor
from gateway.queue import LocalQueue, SpoolIntake
from gateway.routing import Router
from gateway.smtp import MailSink, SmtpServer
from gateway.workers import DeliveryWorkers

__all__ = ["Gateway"]

log = logging.getLogger(__name__)


class Gateway:
    """``async with Gateway(settings) as gateway:`` listens until the block ends."""

    def __init__(self, settings: Settings, credentials: StaticCredentials | None = None) -> None:
        self.settings = settings
        self._credentials = credentials
        self._stack = AsyncExitStack()
        self.smtp: SmtpServer | None = None
        self.queue: LocalQueue | None = None

    async def __aenter__(self) -> Gateway:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def _start(self) -> None:
        settings = self.settings
        aws = await self._stack.enter_async_context(AwsClients(settings.aws, self._credentials))
        store = S3AttachmentStore(aws.s3, settings.attachments, settings.aws)
        deliverer = Deliverer(
            store, ConnectContacts(aws.connect), settings.attachments, settings.content_policy
        )
        sink: MailSink
        workers: DeliveryWorkers | None = None
        if settings.queue.mode == "spool":
            self.queue = LocalQueue(settings.queue.path)
            recovered = await self.queue.open()
            self._stack.push_async_callback(self.queue.close)
            if recovered:
                log.info("resuming %d mail(s) that were being delivered when the gateway stopped", recovered)
            workers = DeliveryWorkers(
                self.queue,
                deliverer,
                Governor(settings.queue.rate_per_second, settings.queue.burst),
                settings.queue,
                hostname=settings.smtp.hostname,
                url_expiry_seconds=settings.attachments.url_expiry_seconds,
            )
            self._stack.push_async_callback(workers.stop)
            sink = SpoolIntake(self.queue, settings.queue.min_free_disk, workers.wake)
        else:
            sink = DeliverNow(deliverer)
        self.smtp = SmtpServer(settings.smtp, Router(settings.routes), sink)
        await self.smtp.start()
        self._stack.push_async_callback(self.smtp.stop)
        if workers is not None:
            workers.start()

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    @property
    def smtp_port(self) -> int:
        assert self.smtp is not None
        return self.smtp.port
