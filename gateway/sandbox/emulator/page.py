"""The staging page: the emulated contacts for people, at ``/`` on the emulator's own port.

Plain HTML, CSS and JavaScript from the package: no build step, no CDN. Mail is untrusted input, so the
page builds its DOM with ``textContent`` only, under a Content-Security-Policy that allows no inline script;
an HTML body is served on a URL of its own with a CSP ``sandbox`` and shown in a sandboxed iframe: no
script runs, nothing remote loads. The page arrives with the contacts and refused calls of the moment as a
JSON data block (never executed, its ``<`` escaped), so that its first paint shows them without waiting for
a poll.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from aiohttp import web
from botocore.exceptions import BotoCoreError, ClientError

from gateway.contact.request import ORIGINAL_REFERENCE
from gateway.sandbox.emulator.connect import EmulatedConnect

if TYPE_CHECKING:
    from gateway.sandbox.emulator.server import FaultyS3

__all__ = ["add_page_routes"]

UI = resources.files("gateway.sandbox.emulator") / "ui"
STATIC = {"app.js": "text/javascript", "style.css": "text/css"}
INITIAL_STATE = '<script id="initial-state" type="application/json">null</script>'

PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "frame-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# The mail's own HTML: its inline styles and data: images, nothing else, in a unique origin without scripts.
BODY_POLICY = (
    "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
)
COMMON_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # presigned URLs stay out of Referer headers
    "Cache-Control": "no-store",
}


def add_page_routes(
    app: web.Application, connect: EmulatedConnect, s3: Callable[[], FaultyS3 | None]
) -> None:
    """``s3``: the embedded S3 whose stored originals the page may show (none when S3 runs elsewhere)."""

    async def page(request: web.Request) -> web.Response:
        with_state = INITIAL_STATE.replace("null", _state(connect))
        html = (UI / "index.html").read_text(encoding="utf-8").replace(INITIAL_STATE, with_state, 1)
        return _response(html, "text/html", PAGE_POLICY)

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound()
        return _static(name, STATIC[name], PAGE_POLICY)

    async def body(request: web.Request) -> web.Response:
        raw = _raw_message(_contact_request(connect, request))
        html = raw.get("Body", "") if raw.get("ContentType") == "text/html" else ""
        headers = {**COMMON_HEADERS, "Content-Security-Policy": BODY_POLICY}
        return web.Response(text=str(html), content_type="text/html", charset="utf-8", headers=headers)

    async def original(request: web.Request) -> web.Response:
        """The stored original, when it lives in this emulator's embedded S3 (never any other URL)."""
        locator = _original_locator(_contact_request(connect, request))
        data = await _read_embedded(s3(), locator) if locator else None
        if data is None:
            raise web.HTTPNotFound(text="no original stored in this emulator's S3 for this contact")
        headers = {**COMMON_HEADERS, "Content-Disposition": 'attachment; filename="original.eml"'}
        return web.Response(body=data, content_type="application/octet-stream", headers=headers)

    app.router.add_get("/", page)
    app.router.add_get("/_emulator/ui/{name}", asset)
    app.router.add_get("/_emulator/contacts/{contact}/body", body)
    app.router.add_get("/_emulator/contacts/{contact}/original", original)


def _state(connect: EmulatedConnect) -> str:
    """What the page shows at once, as the polled endpoints would answer (with their ETag), made safe to
    sit in HTML: no ``<``, ``>`` or ``&`` can end the data block or start markup."""
    state = {
        "contacts": {"contacts": [c.to_json() for c in connect.contacts.values()]},
        "calls": {"calls": [c for c in connect.calls if c["Status"] >= 400]},
        "etag": f'"{connect.version}"',
    }
    text = json.dumps(state, ensure_ascii=False, default=str)
    for character, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(character, escaped)
    return text


def _static(name: str, content_type: str, policy: str) -> web.Response:
    return _response((UI / name).read_text(encoding="utf-8"), content_type, policy)


def _response(text: str, content_type: str, policy: str) -> web.Response:
    headers = {**COMMON_HEADERS, "Content-Security-Policy": policy, "X-Frame-Options": "DENY"}
    return web.Response(text=text, content_type=content_type, charset="utf-8", headers=headers)


async def _read_embedded(s3: FaultyS3 | None, locator: str) -> bytes | None:
    """The object at ``<s3 url>/<bucket>/<key>`` (the gateway's locator for a custom endpoint), signed."""
    if s3 is None or not locator.startswith(s3.url + "/"):
        return None
    bucket, _, key = locator[len(s3.url) + 1 :].partition("/")

    def read() -> bytes | None:
        try:
            body: bytes = s3.client().get_object(Bucket=bucket, Key=unquote(key))["Body"].read()
        except (BotoCoreError, ClientError):
            return None
        return body

    return await asyncio.to_thread(read)


def _contact_request(connect: EmulatedConnect, request: web.Request) -> dict[str, Any]:
    contact = connect.contacts.get(request.match_info["contact"])
    if contact is None:
        raise web.HTTPNotFound(text="no such contact")
    return contact.request


def _raw_message(request: dict[str, Any]) -> dict[str, Any]:
    message = request.get("EmailMessage")
    raw = message.get("RawMessage") if isinstance(message, dict) else None
    return raw if isinstance(raw, dict) else {}


def _original_locator(request: dict[str, Any]) -> str | None:
    references = request.get("References")
    entry = references.get(ORIGINAL_REFERENCE) if isinstance(references, dict) else None
    value = entry.get("Value") if isinstance(entry, dict) else None
    return value if isinstance(value, str) else None
