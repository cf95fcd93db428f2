"""The SMTP front door: aiosmtpd's protocol with the gateway's own MAIL, RCPT, DATA and AUTH.

aiosmtpd runs the session (greeting, EHLO, STARTTLS, RSET, NOOP, QUIT, PROXY); the commands that decide
what the gateway accepts are written here so that every refusal is a reply from :mod:`gateway.replies`,
with its enhanced status code. In order, a connection meets: the PROXY header from a trusted load balancer
(if configured), :class:`~.admission.Admission` at the greeting (networks, connection counts),
``require_tls`` and AUTH at MAIL, the sender policy and the per-client mail rate, routing at RCPT (a mail
that is accepted is already known to be deliverable), the recipient limit, then the DATA reader
(:mod:`.data`) and :mod:`.triage` (loops, sizes, automatic mail). The accepted mail goes to a
:class:`~gateway.mail.MailSink` (delivered at once, or spooled).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, AnyStr

from aiosmtpd.proxy_protocol import ProxyData
from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session

from gateway.addresses import AddressError, Path, parse_address, parse_path
from gateway.contact.routing import POSTMASTER, Router
from gateway.errors import GatewayError, RefusedError, UnreadableError
from gateway.frontdoor.admission import Admission
from gateway.frontdoor.credentials import Credentials
from gateway.frontdoor.data import DataResult, read_data
from gateway.frontdoor.lookup import FixedMethods, fixed_signature
from gateway.frontdoor.triage import screen
from gateway.mail import InMemoryContent, MailContent, MailSink, MailWriter, ReceivedMail, Target
from gateway.message.automatic import Automatic
from gateway.message.mime import ParsedMail
from gateway.observe.mail_log import log_mail, log_received
from gateway.observe.metrics import Metrics
from gateway.replies import Replies, Reply
from gateway.settings import AutomaticPolicy, LimitSettings, SmtpSettings

if TYPE_CHECKING:  # the checks' libraries load only when a check is configured (they cost start-up time)
    from gateway.trust.judge import Trust

__all__ = ["FrontDoor", "SmtpServer"]

log = logging.getLogger(__name__)

IDENT = "ESMTP Amazon Connect mail gateway"
PROXY_TIMEOUT_SECONDS = 10.0
INLINE_SCAN = 256 * 1024  # mails up to this size are triaged on the event loop (microseconds)
_ENHANCED = re.compile(r"^\d{3}[ -]\d\.\d{1,3}\.\d{1,3}( |$)")
# aiosmtpd's own replies, as this gateway says them (with RFC 3463 codes: ENHANCEDSTATUSCODES is offered).
_AIOSMTPD_REPLIES = {
    "220 Ready to start TLS": "220 2.0.0 Ready to start TLS",
    "221 Bye": "221 2.0.0 Bye",
    "250 OK": "250 2.0.0 OK",
    "454 TLS not available": "454 4.7.0 TLS not available",
    "501 Syntax: STARTTLS": "501 5.5.4 Syntax: STARTTLS",
    "502 EXPN not implemented": "502 5.5.1 EXPN not implemented",
    "554 Command refused due to lack of security": "554 5.7.0 Command refused due to lack of security",
}
_GENERIC_STATUS = {"2": "2.0.0", "3": "", "4": "4.0.0", "5": "5.5.2"}


@dataclass(frozen=True)
class FrontDoor:
    """What every connection shares: settings, routing, the sink, admission, TLS and credentials."""

    smtp: SmtpSettings
    limits: LimitSettings
    router: Router
    sink: MailSink
    admission: Admission
    tls_context: ssl.SSLContext | None = None
    require_tls: bool = False
    credentials: Credentials | None = None
    automatic_policy: AutomaticPolicy = AutomaticPolicy.FORWARD
    proxy_protocol: bool = False
    metrics: Metrics = field(default_factory=Metrics)
    trust: Trust | None = None  # sender authentication, spam and virus checks before the 250
    # The mail parsed in a reader process (killable, within its budget), for the virus scan's files.
    parse: Callable[[MailContent], Awaitable[ParsedMail]] | None = None


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


def _bad_characters(arg: str | None) -> bool:
    return arg is not None and ("\x00" in arg or "\r" in arg)


def _valid_helo(name: str) -> bool:
    return (
        bool(name) and len(name) <= 255 and not any(c.isspace() or ord(c) < 32 or c == "\x7f" for c in name)
    )


class _Answered(Exception):
    """aiosmtpd has already sent the reply to this command."""


def _not_utf8(text: str) -> bool:
    """aiosmtpd decodes arguments as UTF-8 with surrogate escapes: a surrogate is a byte that was not."""
    return any("\udc80" <= char <= "\udcff" for char in text)


def _printable(text: str) -> str:
    """An address as a reply may quote it: undecodable bytes shown as U+FFFD, never sent back raw."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class _Hooks(FixedMethods):
    """The aiosmtpd handler: only what the protocol subclass does not do itself."""

    def __init__(self, door: FrontDoor) -> None:
        self._door = door

    @fixed_signature
    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        assert isinstance(server, GatewaySMTP)
        lines = [r for r in responses[:-1] if not r.startswith("250-AUTH")]
        # aiosmtpd reads commands one by one from a stream, so pipelined commands already work.
        lines += ["250-PIPELINING", "250-ENHANCEDSTATUSCODES"]
        if self._door.credentials is not None and server.secure():
            lines.append("250-AUTH LOGIN PLAIN")
        return [*lines, responses[-1]]

    async def handle_PROXY(
        self, server: SMTP, session: Session, envelope: Envelope, proxy: ProxyData
    ) -> bool:
        """Only the configured load balancers may say who the client really is."""
        peer = str(session.peer[0]) if isinstance(session.peer, tuple) else str(session.peer)
        if not self._door.admission.proxy_trusted(peer):
            log.warning("PROXY header from %s, which is not a trusted load balancer: connection closed", peer)
            return False
        return bool(proxy.valid)

    async def handle_exception(self, error: Exception) -> str:
        log.exception("unexpected error in an SMTP session")
        return str(Replies.LOCAL_ERROR)


class GatewaySMTP(FixedMethods, SMTP):
    def __init__(self, door: FrontDoor, *, implicit_tls: bool = False, **options: Any) -> None:
        limits = door.limits
        self.line_length_limit = limits.max_line_length + 2  # read by SMTP.__init__ for its stream reader
        super().__init__(
            _Hooks(door),
            data_size_limit=door.smtp.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=door.smtp.hostname,
            ident=IDENT,
            timeout=limits.command_timeout,
            tls_context=None if implicit_tls else door.tls_context,
            require_starttls=False,  # require_tls is enforced at MAIL, with the reply RFC 3207 names
            auth_require_tls=True,
            proxy_protocol_timeout=PROXY_TIMEOUT_SECONDS if door.proxy_protocol else None,
            **options,
        )
        self._door = door
        self._implicit_tls = implicit_tls
        self._client: str | None = None  # the real client: after PROXY, the address the balancer gave
        self._junk_commands = 0  # NOOP, RSET, VRFY, HELP since the last mail

    def _create_envelope(self) -> _Envelope:
        return _Envelope()

    # Methods, not properties: aiosmtpd's constructor inspects every attribute of the protocol.
    def _envelope(self) -> _Envelope:
        assert isinstance(self.envelope, _Envelope)
        return self.envelope

    def secure(self) -> bool:
        return self._implicit_tls or self._tls_protocol is not None

    def client_address(self) -> str:
        return self._client or ""

    def _greeted(self) -> bool:
        return self.session is not None and bool(self.session.host_name)

    async def _reply(self, reply: Reply) -> None:
        if reply.code >= 400:
            self._door.metrics.refused.labels(reply.name or "other").inc()
        await self.push(str(reply))

    # -- the session's edges: greeting, replies, timeouts, the end --------------------------------------

    async def push(self, status: AnyStr) -> None:
        text = status.decode("utf-8", "replace") if isinstance(status, bytes) else status
        if self._client is None and text.startswith("220 "):  # the greeting: admission first
            refusal = self._admit()
            if refusal is not None:
                await super().push(str(refusal))
                assert self.transport is not None
                self.transport.close()
                return
        elif not text.startswith(("220 ", "250-", "334 ")) and not _ENHANCED.match(text):
            text = _AIOSMTPD_REPLIES.get(text) or f"{text[:3]} {_GENERIC_STATUS.get(text[:1], '')} {text[4:]}"
        await super().push(text)

    def _admit(self) -> Reply | None:
        assert self.session is not None
        proxy = self.session.proxy_data
        if proxy is not None and proxy.src_addr is not None:
            self._client = str(proxy.src_addr)
        else:
            peer = self.session.peer
            self._client = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        refusal = self._door.admission.open(self._client)
        self._door.metrics.sessions.inc()
        if refusal is not None:
            self._door.metrics.refused.labels(refusal.name).inc()
            log.info("connection from %s refused: %s", self._client, refusal)
            self._client = ""  # refused: nothing to release at the end
        return refusal

    def connection_lost(self, error: Exception | None) -> None:
        if self._client:
            self._door.admission.close(self._client)
            self._client = ""
        super().connection_lost(error)

    def _timeout_cb(self) -> None:
        """A client that stays silent (or dribbles a slow-loris DATA) is told, then disconnected."""
        if self.transport is not None and not self.transport.is_closing():
            self._door.metrics.refused.labels(Replies.TIMEOUT.name).inc()
            self._writer.write(f"{Replies.TIMEOUT}\r\n".encode())
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    def _reset_envelope(self) -> None:
        self.envelope = self._create_envelope()

    # -- commands ---------------------------------------------------------------------------------------

    async def smtp_EHLO(self, hostname: str) -> None:
        if _valid_helo(hostname):
            await super().smtp_EHLO(hostname)
        else:
            await self._reply(Replies.HELO_SYNTAX)

    async def smtp_HELO(self, hostname: str) -> None:
        if _valid_helo(hostname):
            await super().smtp_HELO(hostname)
        else:
            await self._reply(Replies.HELO_SYNTAX)

    async def smtp_MAIL(self, arg: str | None) -> None:
        await self._reply(self._mail(arg))

    def _mail(self, arg: str | None) -> Reply:
        envelope = self._envelope()
        door = self._door
        if _bad_characters(arg):
            return Replies.BAD_CHARACTERS
        if not self._greeted():
            return Replies.HELO_FIRST
        if envelope.mail_from is not None:
            return Replies.NESTED_MAIL
        if door.require_tls and not self.secure():
            return Replies.TLS_REQUIRED
        assert self.session is not None
        if door.admission.needs_auth(self.client_address()) and not self.session.authenticated:
            return Replies.AUTH_REQUIRED
        parsed = _command_path(arg, "FROM:")
        if parsed is None:
            return Replies.MAIL_SYNTAX
        path, parameters = parsed
        refusal = self._mail_parameters(parameters) or door.sink.room_for(int(parameters.get("SIZE") or 0))
        if refusal:
            return refusal
        if path.mailbox:
            shown = f"<{_printable(path.mailbox)}>"
            if _not_utf8(path.mailbox):
                return Replies.BAD_SENDER.format(address=shown, reason="it is not valid UTF-8")
            if not path.mailbox.isascii() and "SMTPUTF8" not in parameters:
                return Replies.SMTPUTF8_NEEDED.format(address=shown)
            try:
                parse_address(path.mailbox)
            except AddressError as error:
                return Replies.BAD_SENDER.format(address=shown, reason=error)
        refusal = door.admission.sender(path.mailbox) or door.admission.mail(self.client_address())
        if refusal:
            return refusal
        envelope.mail_from = path.mailbox
        envelope.mail_options = [f"{k}={v}" if v else k for k, v in parameters.items()]
        envelope.smtp_utf8 = "SMTPUTF8" in parameters
        return Replies.SENDER_OK

    def _mail_parameters(self, parameters: dict[str, str]) -> Reply | None:
        limit = self._door.smtp.max_message_size
        for name, value in parameters.items():
            if name == "SIZE":
                if not value.isdigit():
                    return Replies.PARAMETER_INVALID.format(parameter=name)
                if int(value) > limit:
                    return Replies.TOO_BIG.format(limit=limit)
            elif name == "BODY":
                if value.upper() not in ("7BIT", "8BITMIME"):
                    return Replies.PARAMETER_INVALID.format(parameter=name)
            elif name == "SMTPUTF8":
                if value:
                    return Replies.PARAMETER_INVALID.format(parameter=name)
            elif name != "AUTH":  # RFC 4954's AUTH=<> from relays that authenticated us: ignored
                return Replies.PARAMETER_UNKNOWN.format(parameter=name)
        return None

    async def smtp_RCPT(self, arg: str | None) -> None:
        await self._reply(self._rcpt(arg))

    def _rcpt(self, arg: str | None) -> Reply:
        envelope = self._envelope()
        if _bad_characters(arg):
            return Replies.BAD_CHARACTERS
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
        if len(envelope.rcpt_tos) >= self._door.limits.max_recipients:
            return Replies.TOO_MANY_RECIPIENTS
        shown = f"<{_printable(path.mailbox)}>"
        if path.source_route:
            return Replies.RELAY_DENIED.format(address=shown)
        if _not_utf8(path.mailbox):
            return Replies.BAD_RECIPIENT.format(address=shown, reason="it is not valid UTF-8")
        if not path.mailbox.isascii() and not envelope.smtp_utf8:
            return Replies.SMTPUTF8_NEEDED.format(address=shown)
        try:
            if path.mailbox.casefold() == POSTMASTER:  # RFC 5321 §4.5.1: accepted without a domain
                target = self._door.router.postmaster()
            else:
                target = self._door.router.resolve(parse_address(path.mailbox))
        except AddressError as error:
            return Replies.BAD_RECIPIENT.format(address=shown, reason=error)
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
        door = self._door
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        data_timeout = door.limits.data_timeout
        self._reset_timeout(data_timeout)
        writer = door.sink.writer()
        try:
            result = await read_data(
                self._reader,
                writer,
                max_size=door.smtp.max_message_size,
                max_line=door.limits.max_line_length,
                on_progress=lambda: self._reset_timeout(data_timeout),
            )
            self._reset_timeout()
            self._reset_envelope()
            door.metrics.received.inc()
            reply = await self._received(envelope, writer, result)
        finally:
            writer.discard()  # whatever the sink did not keep (a spool keeps the file by moving it)
        if reply.code < 400:
            door.metrics.accepted.inc()
            self._junk_commands = 0  # a client that sends mail is not just holding a connection
        await self._reply(reply)

    async def _received(self, envelope: _Envelope, writer: MailWriter, result: DataResult) -> Reply:
        """The reply to a mail whose DATA has ended: refused as it streamed, or triaged and handed over."""
        if result.refusal is not None:
            # The bytes were cut short: no Message-ID to name, but the mail still gets its line.
            log_mail(
                outcome="refused",
                queue_id=None,
                message_id=None,
                recipients=len(envelope.rcpt_tos),
                reason=result.refusal.name,
                personal={"sender": envelope.mail_from, "to": list(envelope.rcpt_tos)},
            )
            return result.refusal
        assert self.session is not None
        assert envelope.mail_from is not None
        mail = ReceivedMail(
            sender=envelope.mail_from,
            recipients=tuple(envelope.rcpt_tos),
            targets=tuple(envelope.targets),
            content=InMemoryContent(b""),
            peer=self.client_address(),
            helo=self.session.host_name or "",
        )
        try:
            mail = replace(mail, content=writer.close())
        except GatewayError as error:  # the spool's disk could not take it: the client tries again later
            log.error("could not keep a mail while it arrived: %s", error)
            log_received(mail, "deferred", error.reply.name)
            return error.reply
        return await self._take(mail)

    async def _take(self, mail: ReceivedMail) -> Reply:
        """The triage verdict, then the automatic-mail policy, then the sink."""
        door = self._door
        arguments = (mail.content, mail.sender, door.limits, door.smtp.hostname)
        # A large mail's scan runs in a thread: the event loop goes on serving the other sessions.
        triage = (
            await asyncio.to_thread(screen, *arguments)
            if mail.content.size > INLINE_SCAN
            else screen(*arguments)
        )
        refusal = triage.refusal
        mail = replace(mail, message_id=triage.message_id, message_id_known=triage.message_id_known)
        if (
            refusal is None
            and triage.automatic != Automatic.NO
            and door.automatic_policy == AutomaticPolicy.REFUSE
        ):
            refusal = Replies.AUTOMATIC_REFUSED
        if refusal is not None:
            log_received(mail, "refused", refusal.name)
            return refusal
        judged = await self._judge(mail)
        if isinstance(judged, Reply):
            return judged
        mail = judged
        if triage.automatic != Automatic.NO and door.automatic_policy == AutomaticPolicy.DROP:
            reply = await door.sink.park(mail)
            if reply.code < 400:
                log_received(mail, "parked", triage.automatic)
            else:  # the spool could not take it: the client retries, nothing was kept
                log_received(mail, "deferred", reply.name)
            return reply
        return await door.sink.accept(mail)

    async def _judge(self, mail: ReceivedMail) -> ReceivedMail | Reply:
        """The trust checks' verdict (:mod:`gateway.trust`): their refusal, or the mail carrying the verdicts
        (kept beside its bytes, never written into them) for the contact."""
        door = self._door
        trust = door.trust
        if trust is None or not trust.active:
            return mail
        assert self.session is not None
        user = self.session.auth_data if self.session.authenticated else None
        from gateway.trust.judge import SessionFacts

        facts = SessionFacts(
            client=mail.peer,
            helo=mail.helo,
            sender=mail.sender,
            recipients=mail.recipients,
            authenticated_as=user if isinstance(user, str | bytes) and user else None,
        )
        parsed = None
        if trust.scans_files and door.parse is not None:
            try:
                parsed = await door.parse(mail.content)
            except UnreadableError as error:  # the virus scan cannot see its files: the engine fails
                log.warning("the mail could not be read for its virus scan: %s", error)
        result = await trust.judge(mail.content, facts, [t.route for t in mail.targets], parsed=parsed)
        if result.refusal is not None:
            log_received(mail, "refused", result.refusal.name)
            return result.refusal
        return replace(mail, verdicts=json.dumps(result.to_json()))

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

    async def smtp_AUTH(self, arg: str) -> None:
        try:
            reply = await self._auth(arg)
        except _Answered:  # aiosmtpd answered the exchange itself (an abort, an answer not in base64)
            return
        if reply is not None:
            await self._reply(reply)

    async def _auth(self, arg: str | None) -> Reply | None:
        """PLAIN and LOGIN, over TLS only, against the credentials file; failures slow the client down."""
        door = self._door
        assert self.session is not None
        if not self._greeted():
            return Replies.HELO_FIRST
        if door.credentials is None:
            return Replies.AUTH_UNAVAILABLE
        if not self.secure():
            return Replies.ENCRYPTION_REQUIRED
        if self.session.authenticated:
            return Replies.ALREADY_AUTHENTICATED
        if self._envelope().mail_from is not None:
            return Replies.NESTED_MAIL
        client = self.client_address()
        if door.admission.auth_blocked(client):
            return Replies.AUTH_BLOCKED
        words = (arg or "").split()
        if not words or words[0].upper() not in ("PLAIN", "LOGIN") or len(words) > 2:
            return Replies.AUTH_MECHANISM
        login = await self._login_password(words[0].upper(), words[1] if len(words) == 2 else None)
        if isinstance(login, Reply):
            return login
        user, password = login
        if await asyncio.to_thread(door.credentials.verify, user, password):
            self.session.authenticated = True
            self.session.auth_data = user  # type: ignore[assignment]
            return Replies.AUTH_OK
        door.admission.auth_failed(client)
        log.info("failed AUTH from %s", client)
        return Replies.AUTH_FAILED

    async def _login_password(self, mechanism: str, initial: str | None) -> tuple[bytes, bytes] | Reply:
        if mechanism == "PLAIN":
            blob = _b64(initial) if initial is not None else await self._challenge(b"")
            if isinstance(blob, Reply):
                return blob
            fields = blob.split(b"\x00")
            return (fields[1], fields[2]) if len(fields) == 3 else Replies.AUTH_SYNTAX
        user = _b64(initial) if initial is not None else await self._challenge(b"Username:")
        if isinstance(user, Reply):
            return user
        password = await self._challenge(b"Password:")
        return password if isinstance(password, Reply) else (user, password)

    async def _challenge(self, prompt: bytes) -> bytes:
        answer = await self.challenge_auth(prompt)
        if answer is MISSING:  # aiosmtpd already answered (abort or bad base64): one reply is enough
            raise _Answered
        assert isinstance(answer, bytes)
        return answer

    # -- commands that carry no mail: counted, as Postfix counts them (smtpd_junk_command_limit) ----------

    async def smtp_NOOP(self, arg: str | None) -> None:
        if await self._junk():
            await super().smtp_NOOP(arg)

    async def smtp_RSET(self, arg: str | None) -> None:
        if await self._junk():
            await super().smtp_RSET(arg)

    async def smtp_VRFY(self, arg: str | None) -> None:
        if await self._junk():
            await super().smtp_VRFY(arg)

    async def smtp_HELP(self, arg: str | None) -> None:
        if await self._junk():
            await super().smtp_HELP(arg)

    async def _junk(self) -> bool:
        """Whether the session may go on: past ``max_junk_commands`` of these without a mail accepted, a
        client is only keeping a connection (and its slot) open: 421, and the connection closes."""
        self._junk_commands += 1
        if self._junk_commands <= self._door.limits.max_junk_commands:
            return True
        await self._reply(Replies.TOO_MANY_COMMANDS)
        assert self.transport is not None
        self.transport.close()
        return False


def _b64(text: str) -> bytes | Reply:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return Replies.AUTH_SYNTAX


class SmtpServer:
    """The listening sockets (plain with STARTTLS, and implicit TLS when configured)."""

    def __init__(self, door: FrontDoor, implicit_tls: tuple[str, int] | None = None) -> None:
        self._door = door
        self._implicit_tls = implicit_tls
        self._servers: list[asyncio.Server] = []

    @property
    def door(self) -> FrontDoor:
        return self._door

    @door.setter
    def door(self, door: FrontDoor) -> None:
        """A reloaded configuration: connections from now on get this door; those open keep theirs."""
        self._door = door

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        door = self._door
        backlog = door.limits.listen_backlog  # at least max_connections: a burst waits, then hears 421
        self._servers.append(
            await loop.create_server(
                lambda: GatewaySMTP(self._door, loop=loop), door.smtp.host, door.smtp.port, backlog=backlog
            )
        )
        if self._implicit_tls is not None:
            host, port = self._implicit_tls
            self._servers.append(
                await loop.create_server(
                    lambda: GatewaySMTP(self._door, implicit_tls=True, loop=loop),
                    host,
                    port,
                    ssl=door.tls_context,
                    backlog=backlog,
                )
            )

    @property
    def port(self) -> int:
        return int(self._servers[0].sockets[0].getsockname()[1])

    @property
    def listening(self) -> bool:
        return bool(self._servers) and all(server.is_serving() for server in self._servers)

    @property
    def implicit_tls_port(self) -> int | None:
        return int(self._servers[1].sockets[0].getsockname()[1]) if len(self._servers) > 1 else None

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
            await server.wait_closed()
