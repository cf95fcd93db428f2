"""The SMTP front door: aiosmtpd's protocol with the gateway's own MAIL, RCPT and DATA.

aiosmtpd runs the session (greeting, EHLO, RSET, NOOP, QUIT, timeouts); the commands that decide what
the gateway accepts are written here so that every refusal uses a reply from :mod:`gateway.replies`.
Recipients are routed at RCPT time, so a mail that is accepted is already known to be deliverable, and the
accepted mail goes to a :class:`MailSink` (delivered at once, or spooled).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from aiosmtpd.smtp import SMTP, Envelope, Session

from gateway.addresses import AddressError, Path, parse_address, parse_path
from gateway.config import SmtpSettings
from gateway.errors import RefusedError
from gateway.replies import Replies, Reply
from gateway.routing import Router, Target
from gateway.smtp_data import read_data

__all__ = ["MailSink", "ReceivedMail", "SmtpServer"]

log = logging.getLogger(__name__)

IDENT = "ESMTP Amazon Connect mail gateway"
MAX_LINE_BYTES = 64 * 1024  # long content lines are real (Outlook HTML, unwrapped base64)
COMMAND_TIMEOUT_SECONDS = 300


@dataclass(frozen=True)
class ReceivedMail:
    """A mail as the DATA command ends: envelope, routing decided at RCPT, and the bytes as received."""

    sender: str  # "" for the null sender
    recipients: tuple[str, ...]
    targets: tuple[Target, ...]
    raw: bytes
    peer: str
    helo: str


class MailSink(Protocol):
    def room_for(self, size: int) -> Reply | None:
        """A refusal when a mail of ``size`` bytes could not be kept now (asked at MAIL FROM)."""
        ...

    async def accept(self, mail: ReceivedMail) -> Reply:
        """Take responsibility for the mail (or not) and return the reply to DATA."""
        ...


class _Envelope(Envelope):
    def __init__(self) -> None:
        super().__init__()
        self.targets: list[Target] = []


def _parameters(text: str) -> dict[str, str] | None:
    """ESMTP parameters (``SIZE=123 BODY=8BITMIME SMTPUTF8``) by upper-case name; None if malformed."""
    result: dict[str, str] = {}
    for token in text.split():
        key, equals, value = token.partition("=")
        if not key.isalnum() or (equals and not value):
            return None
        result[key.upper()] = value
    return result


class _Hooks:
    """The aiosmtpd handler: only what the protocol subclass does not do itself."""

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        # aiosmtpd reads commands one by one from a stream, so pipelined commands already work.
        return [*responses[:-1], "250-PIPELINING", "250-ENHANCEDSTATUSCODES", responses[-1]]

    async def handle_exception(self, error: Exception) -> str:
        log.exception("unexpected error in an SMTP session")
        return str(Replies.LOCAL_ERROR)


class GatewaySMTP(SMTP):
    def __init__(self, settings: SmtpSettings, router: Router, sink: MailSink, **options: Any) -> None:
        self.line_length_limit = MAX_LINE_BYTES + 2  # read by SMTP.__init__ for its stream reader
        super().__init__(
            _Hooks(),
            data_size_limit=settings.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=settings.hostname,
            ident=IDENT,
            timeout=COMMAND_TIMEOUT_SECONDS,
            **options,
        )
        self._settings = settings
        self._router = router
        self._sink = sink

    def _create_envelope(self) -> _Envelope:
        return _Envelope()

    # Methods, not properties: aiosmtpd's constructor inspects every attribute of the protocol.
    def _envelope(self) -> _Envelope:
        assert isinstance(self.envelope, _Envelope)
        return self.envelope

    async def _reply(self, reply: Reply) -> None:
        await self.push(str(reply))

    def _reset_envelope(self) -> None:
        self.envelope = self._create_envelope()

    async def smtp_MAIL(self, arg: str | None) -> None:
        await self._reply(self._mail(arg))

    def _mail(self, arg: str | None) -> Reply:
        envelope = self._envelope()
        if not self._greeted():
            return Replies.HELO_FIRST
        if envelope.mail_from is not None:
            return Replies.NESTED_MAIL
        parsed = _command_path(arg, "FROM:")
        if parsed is None:
            return Replies.MAIL_SYNTAX
        path, parameters = parsed
        refusal = self._mail_parameters(parameters) or self._sink.room_for(int(parameters.get("SIZE") or 0))
        if refusal:
            return refusal
        if path.mailbox:
            try:
                parse_address(path.mailbox)
            except AddressError as error:
                return Replies.BAD_SENDER.format(address=f"<{path.mailbox}>", reason=error)
        envelope.mail_from = path.mailbox
        envelope.mail_options = [f"{k}={v}" if v else k for k, v in parameters.items()]
        envelope.smtp_utf8 = "SMTPUTF8" in parameters
        return Replies.SENDER_OK

    def _mail_parameters(self, parameters: dict[str, str]) -> Reply | None:
        for name, value in parameters.items():
            if name == "SIZE":
                if not value.isdigit():
                    return Replies.PARAMETER_INVALID.format(parameter=name)
                if int(value) > self._settings.max_message_size:
                    return Replies.TOO_BIG.format(limit=self._settings.max_message_size)
            elif name == "BODY":
                if value.upper() not in ("7BIT", "8BITMIME"):
                    return Replies.PARAMETER_INVALID.format(parameter=name)
            elif name == "SMTPUTF8":
                if value:
                    return Replies.PARAMETER_INVALID.format(parameter=name)
            else:
                return Replies.PARAMETER_UNKNOWN.format(parameter=name)
        return None

    async def smtp_RCPT(self, arg: str | None) -> None:
        await self._reply(self._rcpt(arg))

    def _rcpt(self, arg: str | None) -> Reply:
        envelope = self._envelope()
        if not self._greeted():
            return Replies.HELO_FIRST
        if envelope.mail_from is None:
            return Replies.MAIL_FIRST
        parsed = _command_path(arg, "TO:")
        if parsed is None or not parsed[0].mailbox:
            return Replies.RCPT_SYNTAX
        path, parameters = parsed
        if parameters:
            return Replies.PARAMETER_UNKNOWN.format(parameter=next(iter(parameters)))
        if path.source_route:
            return Replies.RELAY_DENIED.format(address=f"<{path.mailbox}>")
        try:
            target = self._router.resolve(parse_address(path.mailbox))
        except AddressError as error:
            return Replies.BAD_RECIPIENT.format(address=f"<{path.mailbox}>", reason=error)
        except RefusedError as refusal:
            return refusal.reply
        envelope.rcpt_tos.append(path.mailbox)
        envelope.targets.append(target)
        return Replies.RECIPIENT_OK

    async def smtp_DATA(self, arg: str | None) -> None:
        refusal = self._data_refusal(arg)
        if refusal is not None:
            await self._reply(refusal)
            return
        envelope = self._envelope()
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        result = await read_data(
            self._reader,
            max_size=self._settings.max_message_size,
            max_line=MAX_LINE_BYTES,
            on_progress=self._reset_timeout,
        )
        self._reset_envelope()
        if result.refusal is not None:
            await self._reply(result.refusal)
            return
        assert self.session is not None
        assert envelope.mail_from is not None
        mail = ReceivedMail(
            sender=envelope.mail_from,
            recipients=tuple(envelope.rcpt_tos),
            targets=tuple(envelope.targets),
            raw=result.content,
            peer=str(self.session.peer),
            helo=self.session.host_name or "",
        )
        await self._reply(await self._sink.accept(mail))

    def _data_refusal(self, arg: str | None) -> Reply | None:
        if not self._greeted():
            return Replies.HELO_FIRST
        if self._envelope().mail_from is None:
            return Replies.MAIL_FIRST
        if not self._envelope().rcpt_tos:
            return Replies.NO_VALID_RECIPIENTS
        if arg:
            return Replies.DATA_SYNTAX
        return None

    def _greeted(self) -> bool:
        return self.session is not None and bool(self.session.host_name)


def _command_path(arg: str | None, keyword: str) -> tuple[Path, dict[str, str]] | None:
    """``FROM:<a@b> SIZE=1`` into the path and its parameters; None when the syntax is wrong."""
    if arg is None or arg[: len(keyword)].upper() != keyword:
        return None
    try:
        path = parse_path(arg[len(keyword) :])
    except AddressError:
        return None
    parameters = _parameters(path.parameters)
    return None if parameters is None else (path, parameters)


class SmtpServer:
    """The listening socket; one :class:`GatewaySMTP` per connection."""

    def __init__(self, settings: SmtpSettings, router: Router, sink: MailSink) -> None:
        self._settings = settings
        self._router = router
        self._sink = sink
        self._server: asyncio.Server | None = None

    def _protocol(self) -> GatewaySMTP:
        return GatewaySMTP(self._settings, self._router, self._sink, loop=asyncio.get_running_loop())

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, self._settings.host, self._settings.port)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
