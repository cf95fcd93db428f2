"""TLS for the front door: the server context (TLS 1.2 at least) and certificate renewal without a restart.

The certificate and key are read again into the same context when their files change, so that the
listener keeps running across a renewal (certbot, cert-manager): new handshakes get the new certificate.
Files that do not load stop the gateway at start with one line naming the file and what is wrong with it
(``mail-gateway check`` loads them the same way); a key with a passphrase is refused, never asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from pathlib import Path

from gateway.errors import StartupError
from gateway.settings import TlsSettings

__all__ = ["CertificateReloader", "server_context"]

log = logging.getLogger(__name__)

NO_PASSPHRASE = b""  # OpenSSL would otherwise prompt on the terminal for an encrypted key, and hang a service


def server_context(settings: TlsSettings) -> ssl.SSLContext:
    """The context the listeners use; :class:`StartupError` naming the file when it does not load."""
    assert settings.certificate is not None
    assert settings.key is not None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    certificate = _pem("tls.certificate", settings.certificate, "CERTIFICATE", "a PEM certificate")
    key = _pem("tls.key", settings.key, "PRIVATE KEY", "a PEM private key")
    try:
        context.load_cert_chain(settings.certificate, settings.key, password=NO_PASSPHRASE)
    except ssl.SSLError as error:
        raise _load_error(settings.certificate, settings.key, certificate, key, error) from None
    return context


def _pem(key: str, path: Path, label: str, kind: str) -> str:
    """The file's text, if it can be read and holds a PEM block of that label."""
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError as error:
        raise StartupError(key, f"{path}: {StartupError.reason(error)}") from None
    if "-----BEGIN " not in text or f"{label}-----" not in text:
        raise StartupError(key, f"{path} is not {kind} (no -----BEGIN ...{label}----- line)")
    return text


def _load_error(
    certificate: Path, key: Path, certificate_text: str, key_text: str, error: ssl.SSLError
) -> StartupError:
    """What OpenSSL's refusal means, in words, naming the file at fault."""
    if "BEGIN CERTIFICATE" not in certificate_text:  # a key in the certificate's file, say
        return StartupError("tls.certificate", f"{certificate} is not a PEM certificate")
    if error.reason == "KEY_VALUES_MISMATCH":
        return StartupError("tls.key", f"{key} is not the key of the certificate {certificate}")
    if "ENCRYPTED" in key_text or error.reason == "BAD_DECRYPT":
        return StartupError("tls.key", f"{key} is protected by a passphrase; give the key without one")
    if error.reason is None or "PEM" in error.reason:
        return StartupError("tls.certificate", f"{certificate} or {key} has a damaged PEM block")
    problem = error.reason.lower().replace("_", " ")
    return StartupError("tls.certificate", f"{certificate} and {key} do not load together ({problem})")


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
            self._context.load_cert_chain(
                self._settings.certificate, self._settings.key, password=NO_PASSPHRASE
            )
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
