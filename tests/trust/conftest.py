"""The trust tests' real servers, each started once per session: a DNS server for the test domains, rspamd
and clamd. A missing engine skips its tests on a developer's machine and fails them under CI."""

from __future__ import annotations

import base64
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.settings import AuthenticationSettings, DnsSettings, FilterSettings
from gateway.trust.judge import Trust

from ..helpers import unavailable
from .servers import Clamd, Rspamd, TestDns, clamd, rspamd

DNS_TIMEOUT = 3.0  # per query: generous, as the server shares the test process; a silent name waits this long


@dataclass(frozen=True)
class SigningKey:
    private_pem: bytes  # PKCS#1, the form dkimpy reads
    public: str  # base64 DER, the p= of the DNS record

    @property
    def record(self) -> str:
        return f"v=DKIM1; k=rsa; p={self.public}"

    def sign(self, raw: bytes, domain: str, selector: str = "sel") -> bytes:
        """``raw`` with a DKIM-Signature of ``domain`` by this key, as a sending server adds it."""
        header = dkim.sign(
            raw,
            selector.encode(),
            domain.encode(),
            self.private_pem,
            include_headers=[b"from", b"to", b"subject"],
        )
        return bytes(header) + raw


@pytest.fixture(scope="session")
def signing_key() -> SigningKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return SigningKey(private, base64.b64encode(public).decode())


@pytest.fixture(scope="session")
def test_dns() -> Iterator[TestDns]:
    server = TestDns()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def rspamd_server(test_dns: TestDns) -> Iterator[Rspamd]:
    if shutil.which("rspamd") is None:
        unavailable("rspamd is not installed (Debian package rspamd)")
    with rspamd(test_dns.port) as server:
        yield server


@pytest.fixture(scope="session")
def clamd_server() -> Iterator[Clamd]:
    if shutil.which("clamd") is None:
        unavailable("clamd is not installed (Debian package clamav-daemon)")
    with clamd() as server:
        yield server


def dns_settings(server: TestDns) -> DnsSettings:
    return DnsSettings(nameservers=(("127.0.0.1", server.port),), timeout=DNS_TIMEOUT)


MakeTrust = Callable[..., Trust]


@pytest.fixture
async def make_trust(test_dns: TestDns) -> AsyncIterator[MakeTrust]:
    """A :class:`Trust` against the test DNS server; ``authentication`` and ``filters`` as given."""
    made: list[Trust] = []

    def make(
        authentication: AuthenticationSettings | None = None,
        filters: FilterSettings | None = None,
        **options: Any,
    ) -> Trust:
        trust = Trust(
            authentication or AuthenticationSettings(enabled=True, authserv_id="mx.gateway.test"),
            filters or FilterSettings(),
            dns_settings(test_dns),
            **options,
        )
        made.append(trust)
        return trust

    yield make
    for trust in made:
        await trust.close()
