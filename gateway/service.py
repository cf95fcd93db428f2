"""The running gateway, assembled: AWS clients, delivery, routing and the SMTP front door."""

from __future__ import annotations

from contextlib import AsyncExitStack
from types import TracebackType

from gateway.attachments import S3AttachmentStore
from gateway.aws import AwsClients, StaticCredentials
from gateway.config import Settings
from gateway.connect import ConnectContacts
from gateway.delivery import Deliverer, DeliverNow
from gateway.routing import Router
from gateway.smtp import SmtpServer

__all__ = ["Gateway"]


class Gateway:
    """``async with Gateway(settings) as gateway:`` listens until the block ends."""

    def __init__(self, settings: Settings, credentials: StaticCredentials | None = None) -> None:
        self.settings = settings
        self._credentials = credentials
        self._stack = AsyncExitStack()
        self.smtp: SmtpServer | None = None

    async def __aenter__(self) -> Gateway:
        settings = self.settings
        try:
            aws = await self._stack.enter_async_context(AwsClients(settings.aws, self._credentials))
            deliverer = Deliverer(
                S3AttachmentStore(aws.s3, settings.attachments),
                ConnectContacts(aws.connect),
                settings.attachments,
            )
            self.smtp = SmtpServer(settings.smtp, Router(settings.routes), DeliverNow(deliverer))
            await self.smtp.start()
            self._stack.push_async_callback(self.smtp.stop)
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    @property
    def smtp_port(self) -> int:
        assert self.smtp is not None
        return self.smtp.port
