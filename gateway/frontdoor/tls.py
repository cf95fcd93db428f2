"""TLS for the front door: the server context (TLS 1.2 at least) and certificate renewal without a restart.

The certificate and key are read again into the same context when their files change, so that the
listener keeps running across a renewal (certbot, cert-manager): new handshakes get the new certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl

from gateway.settings import TlsSettings

__all__ = ["CertificateReloader", "server_context"]

log = logging.getLogger(__name__)


def server_context(settings: TlsSettings) -> ssl.SSLContext:
    assert settings.certificate is not None
    assert settings.key is not None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.certificate, settings.key)
    return context


class CertificateReloader:
    """Looks at the certificate files every ``reload_seconds``; loads them again when they changed."""

    def __init__(self, context: ssl.SSLContext, settings: TlsSettings) -> None:
        self._context = context
        self._settings = settings
        self._seen = self._stamp()
        self._task: asyncio.Task[None] | None = None

    def _stamp(self) -> tuple[float, float]:
        assert self._settings.certificate is not None
        assert self._settings.key is not None
        return (self._settings.certificate.stat().st_mtime, self._settings.key.stat().st_mtime)

    def reload_if_changed(self) -> bool:
        try:
            stamp = self._stamp()
            if stamp == self._seen:
                return False
            assert self._settings.certificate is not None
            self._context.load_cert_chain(self._settings.certificate, self._settings.key)
        except (OSError, ssl.SSLError) as error:  # half-written files: try again next time
            log.warning("the TLS certificate could not be reloaded yet: %s", error)
            return False
        self._seen = stamp
        log.info("TLS certificate reloaded from %s", self._settings.certificate)
        return True

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._settings.reload_seconds)
            self.reload_if_changed()
