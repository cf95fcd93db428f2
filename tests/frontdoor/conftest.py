"""Fixtures of the front door's tests: a door on a free port with a recording sink, TLS certificates made by
trustme, and a credentials file."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from gateway.frontdoor.admission import Admission
from gateway.frontdoor.credentials import hash_password
from gateway.frontdoor.smtp import SmtpServer
from gateway.settings import (
    AccessSettings,
    AuthSettings,
    LimitSettings,
    RouteSettings,
    SmtpSettings,
    TlsSettings,
)

from ..helpers import RecordingSink, Session, make_door

ROUTES = [
    RouteSettings(match="support@example.com", instance_id="i-1"),
    RouteSettings(match="*@help.example.com", instance_id="i-2", destination="help@example.com"),
]
PASSWORD = "correct horse battery staple"


@dataclass
class Door:
    server: SmtpServer
    sink: RecordingSink
    admission: Admission
    opened: list[Session]

    @property
    def port(self) -> int:
        return self.server.port

    async def connect(
        self, source: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None, port: int | None = None
    ) -> Session:
        """A raw connection, closed at the end of the test whatever happens."""
        session = await Session.open(port or self.port, source, ssl_context)
        self.opened.append(session)
        return session

    async def session(self, source: str = "127.0.0.1", greet: bool = True) -> Session:
        session = await self.connect(source)
        assert (await session.reply()).startswith("220 ")
        if greet:
            assert (await session.command("EHLO client.test")).startswith("250 ")
        return session


@pytest.fixture
def certificates(tmp_path: Path) -> tuple[trustme.CA, TlsSettings]:
    ca = trustme.CA()
    certificate = ca.issue_cert("localhost", "127.0.0.1")
    certificate.private_key_pem.write_to_path(tmp_path / "key.pem")
    certificate.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
    return ca, TlsSettings(certificate=tmp_path / "cert.pem", key=tmp_path / "key.pem")


@pytest.fixture
def credentials_file(tmp_path: Path) -> Path:
    path = tmp_path / "users"
    path.write_text(f"# users\nrelay:{hash_password(PASSWORD, rounds=4)}\n")
    return path


@pytest.fixture
async def door_factory() -> AsyncIterator[Callable[..., Any]]:
    servers: list[SmtpServer] = []
    opened: list[Session] = []

    async def build(
        limits: LimitSettings | None = None,
        access: AccessSettings | None = None,
        auth: AuthSettings | None = None,
        implicit: bool = False,
        **options: Any,
    ) -> Door:
        sink = RecordingSink()
        smtp = SmtpSettings(host="0.0.0.0", port=0, hostname="mx.gateway.test", max_message_size=200_000)
        # Loopback addresses stand for internet clients here: none is a relay unless a test says so.
        access = access or AccessSettings(relay_networks=())
        door = make_door(sink, ROUTES, smtp, limits, access, auth, **options)
        server = SmtpServer(door, ("127.0.0.1", 0) if implicit else None)
        await server.start()
        servers.append(server)
        return Door(server, sink, door.admission, opened)

    yield build
    for session in opened:
        session.writer.close()
        with contextlib.suppress(Exception):
            await session.writer.wait_closed()
    for server in servers:
        await server.stop()
