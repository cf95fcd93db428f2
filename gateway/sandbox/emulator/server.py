"""The emulator over HTTP, as botocore expects Connect to speak (rest-json, SigV4 signed).

Endpoints: ``PUT /contact/email`` (StartEmailContact), the staging page at ``/`` (:mod:`.page`), and the
inspection API: ``GET /_emulator/contacts``, ``GET /_emulator/calls`` (``?refused=1``: only the refused),
``DELETE /_emulator/contacts`` (forgets contacts, calls and tokens), ``GET``/``PUT /_emulator/faults``
(see :mod:`.faults`). Like Connect, the server downloads every attachment's presigned URL after it has
answered."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from gateway.contact import contract
from gateway.sandbox.emulator.connect import Answer, AttachmentFetch, Contact, EmulatedConnect
from gateway.sandbox.emulator.faults import FaultInjector, Faults
from gateway.sandbox.emulator.hosts import HostCheck
from gateway.sandbox.emulator.page import add_page_routes
from gateway.service.health import serve_app

__all__ = ["EmulatorServer", "FaultyS3"]

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024 * 1024
FETCH_TIMEOUT_SECONDS = 30


class FaultyS3(Protocol):
    """The embedded S3: its faults follow the emulator's settings, and the staging page reads from it."""

    error_rate: float

    @property
    def url(self) -> str: ...

    def client(self) -> Any:
        """A synchronous botocore S3 client for it."""
        ...


def _json_response(answer: Answer) -> web.Response:
    headers = {"x-amzn-RequestId": str(uuid.uuid4())}
    if answer.error:
        headers["x-amzn-ErrorType"] = answer.error
    return web.json_response(answer.body, status=answer.status, headers=headers)


def _signature_problem(request: web.Request) -> Answer | None:
    """Connect requires SigV4 for the ``connect`` service; the emulator checks the form, not the secret."""
    authorization = request.headers.get("Authorization", "")
    if not authorization.startswith("AWS4-HMAC-SHA256 "):
        return Answer.failure(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
    if "/connect/aws4_request" not in authorization:
        return Answer.failure(
            403, "InvalidSignatureException", "Credential should be scoped to service 'connect'"
        )
    return None


class EmulatorServer:
    def __init__(
        self,
        connect: EmulatedConnect,
        faults: FaultInjector | None = None,
        s3: FaultyS3 | None = None,
        extra_routes: Callable[[web.Application], None] | None = None,
        allowed_hosts: Iterable[str] = (),
    ) -> None:
        """``extra_routes`` adds routes of others on this port (the sandbox's /metrics, /healthz, /readyz);
        ``allowed_hosts``: names the page answers to besides its own (see :mod:`.hosts`)."""
        self.hosts = HostCheck(allowed_hosts)
        self.connect = connect
        self._extra_routes = extra_routes
        self.faults = faults or FaultInjector()
        self.s3 = s3
        self._apply_s3_faults()
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None
        self._fetches: set[asyncio.Task[None]] = set()
        self.port = 0

    def application(self) -> web.Application:
        app = web.Application(client_max_size=MAX_REQUEST_BYTES, middlewares=[self.hosts.middleware])
        app.router.add_put("/contact/email", self._start_email_contact)
        app.router.add_get("/instance/{instance}", self._describe_instance)
        app.router.add_post("/search-email-addresses", self._search_email_addresses)
        app.router.add_get("/contact-flows/{instance}/{flow}", self._describe_contact_flow)
        app.router.add_get("/_emulator/contacts", self._list_contacts)
        app.router.add_delete("/_emulator/contacts", self._clear)
        app.router.add_get("/_emulator/calls", self._list_calls)
        app.router.add_get("/_emulator/faults", self._get_faults)
        app.router.add_put("/_emulator/faults", self._put_faults)
        add_page_routes(app, self.connect, lambda: self.s3)
        if self._extra_routes is not None:
            self._extra_routes(app)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.hosts.listening_on(host)
        self._runner, self.port = await serve_app(self.application(), host, port)
        self._client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT_SECONDS))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        for task in list(self._fetches):
            task.cancel()
        await asyncio.gather(*self._fetches, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._client is not None:
            await self._client.close()

    async def _start_email_contact(self, request: web.Request) -> web.Response:
        latency = self.faults.faults.latency_ms
        if latency:
            await asyncio.sleep(latency / 1000)
        problem = _signature_problem(request)
        body: Any = None
        if problem is None:
            try:
                body = json.loads(await request.read())
            except ValueError:
                problem = Answer.failure(400, "SerializationException", "The request body is not valid JSON")
        fault = None if problem else self.faults.fault()
        if fault is not None and not fault.after_processing:
            problem = fault.answer
        if problem is not None:
            self.connect.record(contract.OPERATION, body, problem)
            return _json_response(problem)
        answer, contact = self.connect.start_email_contact(body, lost=fault.answer if fault else None)
        if contact is not None and contact.attachments:
            task = asyncio.get_running_loop().create_task(self._fetch_attachments(contact))
            self._fetches.add(task)
            task.add_done_callback(self._fetches.discard)
        return _json_response(answer)

    async def _describe_instance(self, request: web.Request) -> web.Response:
        instance = request.match_info["instance"]
        return self._answer(
            "DescribeInstance",
            {"InstanceId": instance},
            request,
            lambda _: self.connect.describe_instance(instance),
        )

    async def _describe_contact_flow(self, request: web.Request) -> web.Response:
        instance, flow = request.match_info["instance"], request.match_info["flow"]
        asked = {"InstanceId": instance, "ContactFlowId": flow}
        return self._answer(
            "DescribeContactFlow",
            asked,
            request,
            lambda _: self.connect.describe_contact_flow(instance, flow),
        )

    async def _search_email_addresses(self, request: web.Request) -> web.Response:
        try:
            body: Any = json.loads(await request.read() or b"{}")
        except ValueError:
            body = None
        return self._answer("SearchEmailAddresses", body, request, self.connect.search_email_addresses)

    def _answer(
        self, operation: str, asked: Any, request: web.Request, decide: Callable[[Any], Answer]
    ) -> web.Response:
        """The read-only operations: signed, recorded, and as strict as the emulator was told to be."""
        answer = _signature_problem(request) or decide(asked)
        self.connect.record(operation, asked, answer)
        return _json_response(answer)

    async def _fetch_attachments(self, contact: Contact) -> None:
        await asyncio.sleep(0)  # after the answer, as Connect does
        for attachment in contact.attachments:
            await self._fetch(attachment)

    async def _fetch(self, attachment: AttachmentFetch) -> None:
        assert self._client is not None
        try:
            async with self._client.get(attachment.url) as response:
                data = await response.read()
                attachment.status = response.status
                if response.status == 200:
                    attachment.size = len(data)
                    attachment.sha256 = hashlib.sha256(data).hexdigest()
                    attachment.fetched = True
                else:
                    attachment.error = f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError) as error:
            attachment.error = f"{type(error).__name__}: {error}"
            log.info("attachment %s could not be fetched: %s", attachment.file_name, attachment.error)
        self.connect.changed()

    async def _list_contacts(self, request: web.Request) -> web.Response:
        return self._unless_unchanged(
            request, lambda: {"contacts": [c.to_json() for c in self.connect.contacts.values()]}
        )

    async def _list_calls(self, request: web.Request) -> web.Response:
        """Every call, or with ``?refused=1`` those answered 4xx or 5xx (injected faults included)."""
        refused = request.query.get("refused") in ("1", "true")
        return self._unless_unchanged(
            request,
            lambda: {"calls": [c for c in self.connect.calls if not refused or c["Status"] >= 400]},
        )

    def _unless_unchanged(self, request: web.Request, document: Callable[[], Any]) -> web.Response:
        """304 when nothing changed since the ETag the client holds: polling costs next to nothing."""
        etag = f'"{self.connect.version}"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.json_response(document(), headers={"ETag": etag, "Cache-Control": "no-cache"})

    async def _clear(self, request: web.Request) -> web.Response:
        self.connect.clear()
        return web.json_response({"cleared": True})

    async def _get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self.faults.faults.to_json())

    async def _put_faults(self, request: web.Request) -> web.Response:
        try:
            document = json.loads(await request.read())
            if not isinstance(document, dict):
                raise ValueError("the body must be a JSON object")
            self.faults.faults = Faults.from_json(document, self.faults.faults)
        except ValueError as error:
            return web.json_response({"error": str(error)}, status=400)
        self._apply_s3_faults()
        return web.json_response(self.faults.faults.to_json())

    def _apply_s3_faults(self) -> None:
        if self.s3 is not None:
            self.s3.error_rate = self.faults.faults.s3_error_rate

    async def _unknown(self, request: web.Request) -> web.Response:
        answer = Answer.failure(
            404, "UnknownOperationException", f"No operation at {request.method} {request.path}"
        )
        return _json_response(answer)
