"""The spam and virus engines the operator already runs: rspamd over HTTP, clamd over its socket.

Each client is the one boundary for its engine: a refused connection, a timeout, a reset, an answer that
makes no sense all become :class:`EngineError`, which the judge turns into ``PROCESSING_FAILED`` (and,
fail-closed, a 451). Every call is bounded by the engine's timeout: never a hang.

rspamd: ``POST /checkv2`` with the raw message and the envelope in request headers (``IP``, ``Helo``,
``From``, one ``Rcpt`` per recipient, ``Queue-Id``, ``User``); it answers JSON with ``action`` and
``score``. clamd: ``zINSTREAM``, then chunks each prefixed with its 4-byte big-endian length, then a zero
length; it answers ``stream: OK`` or ``stream: <signature> FOUND``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from multidict import CIMultiDict

from gateway.addresses import is_ip_literal
from gateway.errors import StartupError
from gateway.settings import ClamdAddress

__all__ = ["ACTIONS", "Clamd", "EngineError", "Rspamd", "RspamdAnswer", "describe"]

# rspamd's actions; "discard" and "quarantine" come from some modules' pre-results
ACTIONS = (
    "no action",
    "greylist",
    "add header",
    "rewrite subject",
    "soft reject",
    "reject",
    "discard",
    "quarantine",
)
CHUNK = 64 * 1024
MAX_REPLY = 4096


class EngineError(Exception):
    """An engine did not give a usable answer in time."""


def describe(address: ClamdAddress) -> str:
    return f"unix:{address}" if isinstance(address, Path) else f"{address[0]}:{address[1]}"


@dataclass(frozen=True)
class RspamdAnswer:
    action: str
    score: float
    required_score: float | None


class Rspamd:
    def __init__(self, url: str, timeout: float, session: aiohttp.ClientSession) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._session = session

    async def check(
        self,
        message: bytes,
        *,
        client: str,
        helo: str,
        sender: str,
        recipients: Sequence[str],
        queue_id: str = "",
        user: str | None = None,
    ) -> RspamdAnswer:
        headers: CIMultiDict[str] = CIMultiDict()
        if is_ip_literal(client):
            headers["IP"] = client
        if helo:
            headers["Helo"] = helo
        headers["From"] = sender
        for recipient in recipients:  # one header each: a dict would keep only the last
            headers.add("Rcpt", recipient)
        if queue_id:
            headers["Queue-Id"] = queue_id
        if user:
            headers["User"] = user
        data = await self._call("POST", "/checkv2", message, headers)
        try:
            answer = json.loads(data)
            action = str(answer["action"])
            score = float(answer["score"])
            required = answer.get("required_score")
        except (ValueError, KeyError, TypeError) as error:
            raise EngineError(f"rspamd: not an answer ({type(error).__name__})") from None
        if action not in ACTIONS:
            raise EngineError(f"rspamd: unknown action {action[:40]!r}")
        return RspamdAnswer(action, score, None if required is None else float(required))

    async def ping(self) -> str:
        data = await self._call("GET", "/ping", b"", CIMultiDict())
        text = data.decode("utf-8", "replace").strip()
        if text != "pong":
            raise EngineError(f"rspamd: /ping answered {text[:40]!r}")
        return text

    async def _call(self, method: str, path: str, body: bytes, headers: CIMultiDict[str]) -> bytes:
        try:
            async with self._session.request(
                method,
                self.url + path,
                data=body or None,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as response:
                data = await response.read()
                if response.status != 200:
                    raise EngineError(f"rspamd: HTTP {response.status}")
                return data
        except TimeoutError:
            raise EngineError("rspamd: no answer in time") from None
        except (aiohttp.ClientError, OSError) as error:
            raise EngineError(f"rspamd: {_why(error)}") from None


def _why(error: Exception) -> str:
    """``connection refused``: an operator's words for a failed exchange, never a Python class name."""
    cause = getattr(error, "os_error", error)  # aiohttp wraps the socket's error
    if isinstance(cause, OSError) and cause.errno:
        return StartupError.reason(cause)
    if isinstance(error, asyncio.IncompleteReadError):
        return "the connection closed before the answer ended"
    if isinstance(error, asyncio.LimitOverrunError):
        return "an answer longer than any clamd gives"
    if isinstance(error, aiohttp.ClientResponseError | aiohttp.ClientPayloadError):
        return "not an HTTP answer"
    return "the connection failed"


class Clamd:
    def __init__(self, address: ClamdAddress, timeout: float, max_size: int) -> None:
        self.address = address
        self.timeout = timeout
        self.max_size = max_size

    async def scan(self, data: bytes) -> str | None:
        """The signature found in ``data``, or None when it is clean."""
        if len(data) > self.max_size:
            raise EngineError(f"clamd: {len(data)} bytes, more than clamd_max_size")
        reply = await self._talk(b"zINSTREAM\0", data)
        text = reply.decode("utf-8", "replace").strip()
        if text.endswith(" FOUND") and text.startswith("stream: "):
            return text[len("stream: ") : -len(" FOUND")].strip() or "unnamed"
        if text == "stream: OK":
            return None
        raise EngineError(f"clamd: {text[:80]!r}")

    async def version(self) -> str:
        """``PING`` then ``VERSION``: what ``mail-gateway check`` shows."""
        pong = await self._talk(b"zPING\0", None)
        if pong.strip() != b"PONG":
            raise EngineError(f"clamd: PING answered {pong[:40]!r}")
        return (await self._talk(b"zVERSION\0", None)).decode("utf-8", "replace").strip()

    async def _talk(self, command: bytes, stream: bytes | None) -> bytes:
        try:
            async with asyncio.timeout(self.timeout):
                return await self._exchange(command, stream)
        except TimeoutError:
            raise EngineError("clamd: no answer in time") from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as error:
            raise EngineError(f"clamd: {_why(error)}") from None

    async def _exchange(self, command: bytes, stream: bytes | None) -> bytes:
        if isinstance(self.address, Path):
            reader, writer = await asyncio.open_unix_connection(self.address, limit=MAX_REPLY)
        else:
            reader, writer = await asyncio.open_connection(*self.address, limit=MAX_REPLY)
        try:
            writer.write(command)
            if stream is not None:
                for start in range(0, len(stream), CHUNK):
                    piece = stream[start : start + CHUNK]
                    writer.write(struct.pack("!I", len(piece)) + piece)
                    await writer.drain()
                writer.write(struct.pack("!I", 0))
            await writer.drain()
            return (await reader.readuntil(b"\0")).rstrip(b"\0")
        finally:
            writer.close()
            with contextlib.suppress(OSError):  # the reset that already failed the exchange
                await writer.wait_closed()
