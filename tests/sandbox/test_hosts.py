"""The staging page answers only to names that cannot be rebound to it (DNS rebinding), over real HTTP."""

from __future__ import annotations

import aiohttp
import pytest

from gateway.sandbox.emulator import EmulatedConnect, EmulatorServer
from gateway.sandbox.emulator.hosts import HostCheck, host_name


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("Example.COM:8025", "example.com"),
        ("example.com", "example.com"),
        ("[::1]:8025", "::1"),
        ("[fe80::1]", "fe80::1"),
        ("::1", "::1"),
        ("127.0.0.1:80", "127.0.0.1"),
    ],
)
def test_the_name_of_a_host_header(header: str, name: str) -> None:
    assert host_name(header) == name


def test_ip_literals_localhost_the_listening_name_and_admitted_names_pass() -> None:
    check = HostCheck(["Staging.Corp.Example"])
    check.listening_on("emulator.internal")
    for header in ("127.0.0.1:8025", "[::1]:8025", "10.1.2.3", "localhost:8025", "app.localhost",
                   "staging.corp.example:443", "emulator.internal:8025", None):  # fmt: skip
        assert check.admits(header), header
    for header in ("attacker.example:8025", "localhost.attacker.example", "staging.corp.example.evil", ""):
        assert not check.admits(header), header


def test_a_wildcard_listen_address_admits_no_name() -> None:
    check = HostCheck()
    check.listening_on("0.0.0.0")
    assert check.names == {"localhost"}


async def get(url: str, host: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url, headers={"Host": host}) as response:
        return response.status, await response.text()


async def test_a_rebound_name_gets_no_mail_and_is_told_how_to_admit_one() -> None:
    server = EmulatorServer(EmulatedConnect(), allowed_hosts=["staging.corp.example"])
    await server.start()
    try:
        for path in ("/", "/_emulator/contacts", "/_emulator/calls", "/_emulator/ui/app.js"):
            status, text = await get(server.url + path, f"attacker.example:{server.port}")
            assert status == 421, path
            assert "--allowed-host attacker.example" in text
            assert (await get(server.url + path, f"127.0.0.1:{server.port}"))[0] == 200, path
            assert (await get(server.url + path, "staging.corp.example"))[0] == 200, path
        # The Connect API stays reachable by any endpoint name: SDKs sign every call instead.
        async with aiohttp.ClientSession() as http:
            answer = await http.put(
                server.url + "/contact/email", headers={"Host": "connect.internal"}, json={}
            )
            assert answer.status == 403
            assert answer.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    finally:
        await server.stop()
