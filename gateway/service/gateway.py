"""The running gateway, assembled: AWS clients, the queue and its workers, routing and the SMTP front door.

Shutdown runs in reverse: the listeners close first (no new mail), the workers get their grace period to
finish deliveries under way, then the spool and the AWS clients close. A start that fails (a port in use,
a spool it may not write, a certificate that does not load) raises one :class:`StartupError` naming the
setting, after undoing what had started.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from gateway.aws.clients import AwsClients, ClientPool, StaticCredentials, usable_credentials
from gateway.contact.routing import Router
from gateway.delivery.deliverer import Deliverer
from gateway.delivery.governor import BudgetFactory, Governors
from gateway.delivery.queue import LocalQueue
from gateway.delivery.reading import MailReader
from gateway.delivery.shared.pacer import shared_budgets
from gateway.delivery.shared.queue import SharedQueue
from gateway.delivery.sinks import DeliverNow, SpoolIntake
from gateway.delivery.spool import LEASE_SECONDS
from gateway.delivery.workers import DeliveryWorkers
from gateway.errors import DeliveryError, SpoolError, StartupError
from gateway.frontdoor.admission import Admission
from gateway.frontdoor.credentials import Credentials
from gateway.frontdoor.smtp import FrontDoor, SmtpServer
from gateway.frontdoor.tls import NO_PASSPHRASE, CertificateReloader, server_context
from gateway.mail import MailSink
from gateway.observe.metrics import Metrics
from gateway.service.health import HttpEndpoint
from gateway.service.places import RoutePlaces, placements
from gateway.settings import AutomaticPolicy, QueueMode, Settings

if TYPE_CHECKING:
    from gateway.trust.judge import Trust

__all__ = ["Gateway", "until_signalled"]

log = logging.getLogger(__name__)

AWS_FAILURE_WINDOW_SECONDS = 300.0
WORK_DIRECTORY = "work"  # under [queue] path: the bodies of attachments being delivered


class Gateway:
    """``async with Gateway(settings) as gateway:`` listens until the block ends."""

    def __init__(
        self, settings: Settings, credentials: StaticCredentials | None = None, *, serve_http: bool = True
    ) -> None:
        """``serve_http=False``: the health routes are served by someone else (the sandbox's emulator)."""
        self._serve_http = serve_http
        self.settings = settings
        self._credentials = credentials
        self._stack = AsyncExitStack()
        self.smtp: SmtpServer | None = None
        self.queue: LocalQueue | None = None
        self.shared: SharedQueue | None = None  # sqs mode
        self.workers: DeliveryWorkers | None = None
        self.trust: Trust | None = None  # with [authentication] or [filters]
        self.http: HttpEndpoint | None = None
        self.admission = Admission(settings.access, settings.limits, settings.auth)
        self.metrics = Metrics()
        self._workers_started = False
        self._tls_context: ssl.SSLContext | None = None
        self._certificates: CertificateReloader | None = None

    async def __aenter__(self) -> Gateway:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    def _work_directory(self) -> Path:
        """Where readers put attachment bodies (and sync and sqs modes their arriving mails): beside the
        spool, emptied at start; else a private temporary directory, removed at the end: in sqs mode under
        ``[queue] path`` (the scratch volume an operator sized; gateways sharing it each have their own),
        in sync mode under the system's."""
        if self.queue is not None:
            work = self.settings.queue.path / WORK_DIRECTORY
            MailReader.clean(work)
            return work
        scratch = None
        if self.settings.queue.mode == QueueMode.SQS:
            scratch = self.settings.queue.path
            scratch.mkdir(parents=True, exist_ok=True)
        temporary = tempfile.TemporaryDirectory(prefix="mail-gateway-", dir=scratch)
        self._stack.callback(temporary.cleanup)
        return Path(temporary.name)

    async def _open_queue(self) -> LocalQueue:
        path = self.settings.queue.path
        queue = LocalQueue(path)
        try:
            recovered = await queue.open()
        except BaseException as error:
            await queue.close()
            if isinstance(error, OSError | SpoolError):
                reason = StartupError.reason(error) if isinstance(error, OSError) else error.detail
                raise StartupError("queue.path", f"cannot use the spool at {path}: {reason}") from None
            raise
        self._stack.push_async_callback(queue.close)
        if recovered:
            log.info("resuming %d mail(s) that were being delivered when the gateway stopped", recovered)
        return queue

    async def _open_shared(self, aws: AwsClients, work: Path) -> SharedQueue:
        """The shared queue (sqs mode): its queue and table must answer at start, each failure naming its
        setting."""
        settings = self.settings
        shared = SharedQueue(aws, settings.queue, settings.attachments, work / "shared", metrics=self.metrics)
        try:
            await shared.open()
        except DeliveryError as error:
            await shared.close()
            key = {"dynamodb": "queue.table", "s3": "attachments.bucket"}.get(
                error.service, "queue.queue_url"
            )
            raise StartupError(key, f"the shared queue cannot be used: {error}") from None
        self._stack.push_async_callback(shared.close)
        return shared

    async def _start(self) -> None:
        settings = self.settings
        queue_settings = settings.queue
        shared = queue_settings.mode == QueueMode.SQS
        credentials, _ = await usable_credentials(settings.aws, self._credentials, shared_queue=shared)
        pool = ClientPool(credentials)
        self._stack.push_async_callback(pool.close)
        await pool.retain(placements(settings))
        metrics = self.metrics
        self.places = RoutePlaces(pool, settings, metrics)
        # Parked mail needs the spool, even in sync mode (sqs mode parks it in the shared queue).
        if queue_settings.mode == QueueMode.SPOOL or (
            queue_settings.mode == QueueMode.SYNC and settings.automatic.policy == AutomaticPolicy.DROP
        ):
            self.queue = await self._open_queue()
        work = self._work_directory()
        reader = MailReader(
            settings.content_policy,
            work,
            processes=queue_settings.readers,
            budget=queue_settings.read_budget,
            memory_limit=queue_settings.reader_memory,
        )
        self._stack.callback(reader.close)
        reader.start()
        trust = None
        if settings.authentication.enabled or settings.filters.enabled:
            from gateway.trust.judge import Trust  # its libraries load only when a check is configured

            trust = Trust.from_settings(settings, metrics)
            self.trust = trust
            self._stack.push_async_callback(trust.close)
        budget: BudgetFactory | None = None  # spool mode: a governor per quota in this process
        if shared:
            # The queue is the gateway's own, in [aws]'s region with its credentials; each route's
            # deliveries are placed as in spool mode, paced by one bucket per quota in the queue's table
            # that every gateway on the queue shares.
            aws = await self._stack.enter_async_context(
                AwsClients(settings.aws, credentials, shared_queue=True)
            )
            self.shared = await self._open_shared(aws, work)
            budget = shared_budgets(self.shared.table)
        self.governors = Governors(settings.queue, settings.quotas, metrics, budget=budget)
        self._stack.push_async_callback(self.governors.close)
        everywhere = await self.places(settings.routes[0])  # every delivery asks for its route's own
        deliverer = Deliverer(
            everywhere.store,
            everywhere.contacts,
            settings.attachments,
            settings.content_policy,
            metrics,
            reader,
            places=self.places,
        )
        sink: MailSink
        queued: LocalQueue | SharedQueue | None = self.shared
        if queue_settings.mode == QueueMode.SPOOL:
            queued = self.queue
        if queued is not None:  # spool and sqs mode: the same workers, whichever queue feeds them
            # The shared queue's claim is its visibility timeout.
            lease = LEASE_SECONDS if isinstance(queued, LocalQueue) else queued.visibility
            self.workers = DeliveryWorkers(
                queued,
                deliverer,
                self.governors,
                queue_settings,
                hostname=settings.smtp.hostname,
                url_expiry_seconds=settings.attachments.url_expiry_seconds,
                lease_seconds=lease,
            )
            self._stack.push_async_callback(self._stop_workers, self.workers)
            sink = SpoolIntake(queued, queue_settings.min_free_disk, self.workers.wake)
        else:
            incoming = self.queue.incoming if self.queue is not None else work
            sink = DeliverNow(deliverer, incoming, self.queue, queue_settings.unreadable)
        tls_context = server_context(settings.tls) if settings.tls.enabled else None
        users = _credentials(settings.auth.credentials) if settings.auth.credentials else None
        door = FrontDoor(
            smtp=settings.smtp,
            limits=settings.limits,
            router=Router(settings.routes, settings.smtp.postmaster),
            sink=sink,
            admission=self.admission,
            tls_context=tls_context,
            require_tls=settings.tls.require_tls,
            credentials=users,
            automatic_policy=settings.automatic.policy,
            proxy_protocol=settings.access.proxy_protocol,
            metrics=metrics,
            trust=trust,
            parse=reader.parse,
        )
        self.smtp = SmtpServer(door, settings.tls.implicit_listen)
        self._stack.push_async_callback(self.smtp.stop)  # also closes a first listener when the second fails
        try:
            await self.smtp.start()
        except OSError as error:
            if self.smtp.listening and settings.tls.implicit_listen:  # the first listener is up
                raise _cannot_listen("tls.implicit_listen", settings.tls.implicit_listen, error) from None
            raise _cannot_listen("smtp.listen", (settings.smtp.host, settings.smtp.port), error) from None
        if tls_context is not None:
            self._tls_context = tls_context
            self._watch_certificates(settings)
        if self.workers is not None:
            self.workers.start()
            self._workers_started = True
        listen = settings.http.listen
        if listen is not None and self._serve_http:
            self.http = HttpEndpoint(self)
            try:
                await self.http.start(*listen)
            except OSError as error:
                raise _cannot_listen("http.listen", listen, error) from None
            self._stack.push_async_callback(self.http.stop)

    def _watch_certificates(self, settings: Settings) -> None:
        assert self._tls_context is not None
        self._certificates = CertificateReloader(self._tls_context, settings.tls)
        self._certificates.start()
        self._stack.push_async_callback(self._certificates.stop)

    async def reload(self, settings: Settings) -> None:
        """Put a new configuration to work for new sessions and new deliveries (:mod:`.reload` keeps what
        needs a restart as it runs). Everything that can fail is done first: a certificate or a credentials
        file that does not load raises :class:`StartupError` and nothing changes."""
        assert self.smtp is not None
        tls = settings.tls
        context = server_context(tls) if tls.enabled else None  # the files load, or nothing changes
        users = _credentials(settings.auth.credentials) if settings.auth.credentials else None
        router = Router(settings.routes, settings.smtp.postmaster)
        if context is not None and self._tls_context is not None:
            # The same context, the new files: the implicit-TLS listener was created with this one.
            assert tls.certificate is not None
            assert tls.key is not None
            self._tls_context.load_cert_chain(tls.certificate, tls.key, password=NO_PASSPHRASE)
            context = self._tls_context
            if self._certificates is not None:
                await self._certificates.stop()
            self._watch_certificates(settings)
        elif context is not None:  # TLS from now on (STARTTLS: an implicit listener needs a restart)
            self._tls_context = context
            self._watch_certificates(settings)
        self.admission.reconfigure(settings.access, settings.limits, settings.auth)
        if self.trust is not None:
            self.trust.reconfigure(settings.access.relay_networks)
        self.smtp.door = replace(
            self.smtp.door,
            smtp=settings.smtp,
            limits=settings.limits,
            router=router,
            tls_context=context,
            require_tls=tls.require_tls,
            credentials=users,
            automatic_policy=settings.automatic.policy,
            proxy_protocol=settings.access.proxy_protocol,
        )
        await self.places.update(settings)
        self.governors.update(settings.queue, settings.quotas)
        self.settings = settings

    async def _stop_workers(self, workers: DeliveryWorkers) -> None:
        """Workers that never started (the listener failed) have nothing to stop."""
        if self._workers_started:
            await workers.stop()

    def ready(self) -> tuple[bool, str]:
        """SMTP listening, the spool writable with room (and its last write worked), every delivery
        worker running, in sync mode AWS answering lately, and in sqs mode S3, SQS and DynamoDB each
        answering lately."""
        if self.smtp is None or not self.smtp.listening:
            return False, "the SMTP listener is not up"
        if self.queue is not None:
            if not self.queue.writable():
                return False, f"the spool at {self.settings.queue.path} is not writable"
            if self.queue.free_bytes() < self.settings.queue.min_free_disk:
                return False, "the spool's disk is below min_free_disk"
            if self.queue.write_failure is not None:
                return False, f"the spool could not be written: {self.queue.write_failure}"
        if self.shared is not None:
            answering, reason = self.shared.health()
            if not answering:
                return False, reason
            if self.shared.free_bytes() < self.settings.queue.min_free_disk:
                return False, "the disk where mails arrive is below min_free_disk"
        if self.workers is not None:
            running, reason = self.workers.health()
            if not running:
                return False, reason
        if self.settings.queue.mode == QueueMode.SYNC:
            failure, success = self.metrics.last_aws_failure, self.metrics.last_aws_success
            recent = failure is not None and time.monotonic() - failure < AWS_FAILURE_WINDOW_SECONDS
            if recent and (success is None or (failure is not None and success < failure)):
                return False, "AWS did not answer lately, and sync mode needs it for every mail"
        return True, "ok"

    async def refresh_metrics(self) -> None:
        if self.queue is not None:
            self.metrics.set_queue(
                {state.value: count for state, count in (await self.queue.counts()).items()}
            )
        if self.shared is not None:
            try:
                self.metrics.set_queue(await self.shared.counts())
            except DeliveryError as error:  # the scrape still answers; /readyz says what is wrong
                log.warning("the shared queue's depth could not be read: %s", error.summary)

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    @property
    def smtp_port(self) -> int:
        assert self.smtp is not None
        return self.smtp.port


def _credentials(path: Path) -> Credentials:
    try:
        return Credentials.load(path)
    except OSError as error:
        raise StartupError("auth.credentials", f"{path}: {StartupError.reason(error)}") from None


def _cannot_listen(key: str, address: tuple[str, int], error: OSError) -> StartupError:
    """A port in use or not allowed, in words, naming the setting."""
    host, port = address
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    problem = f"cannot listen on {where}: {StartupError.reason(error)}"
    if error.errno == errno.EACCES and 0 < port < 1024:
        problem += " (a port below 1024 needs root or the CAP_NET_BIND_SERVICE capability)"
    elif error.errno == errno.EADDRINUSE:
        problem += " (another program, or another gateway, listens there)"
    return StartupError(key, problem)


async def until_signalled(hangup: Callable[[], Awaitable[object]] | None = None) -> None:
    """Wait for SIGINT or SIGTERM; on SIGHUP, run ``hangup`` (a reload), one at a time."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = [signal.SIGINT, signal.SIGTERM]
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    running: set[asyncio.Task[object]] = set()
    lock = asyncio.Lock()

    async def one_at_a_time() -> object:
        assert hangup is not None
        async with lock:
            return await hangup()

    def hung_up() -> None:
        task = loop.create_task(one_at_a_time())
        running.add(task)
        task.add_done_callback(running.discard)

    if hangup is not None:
        loop.add_signal_handler(signal.SIGHUP, hung_up)
        signals.append(signal.SIGHUP)
    try:
        await stop.wait()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
