"""Routing at RCPT time: first match wins, plus tags, relay refusal."""

from __future__ import annotations

import pytest

from gateway.addresses import parse_address
from gateway.contact.routing import Router
from gateway.errors import RefusedError
from gateway.settings import RouteSettings

ROUTES = (
    RouteSettings(match="support@example.com", instance_id="i-1"),
    RouteSettings(match="sales@example.com", instance_id="i-1", destination="team@example.com"),
    RouteSettings(match="*@help.example.com", instance_id="i-2", destination="help@example.com"),
    RouteSettings(match="*@example.org", instance_id="i-3"),
)


def resolve(address: str, routes: tuple[RouteSettings, ...] = ROUTES) -> tuple[str, str, str | None]:
    target = Router(routes).resolve(parse_address(address))
    return target.route.instance_id, target.destination, target.tag


def refusal(address: str, routes: tuple[RouteSettings, ...] = ROUTES) -> str:
    with pytest.raises(RefusedError) as caught:
        Router(routes).resolve(parse_address(address))
    return str(caught.value.reply)


def test_exact_match_uses_the_configured_address_as_destination() -> None:
    assert resolve("support@example.com") == ("i-1", "support@example.com", None)
    assert resolve("SUPPORT@Example.COM") == ("i-1", "support@example.com", None)


def test_domain_match_uses_the_recipient_as_destination() -> None:
    assert resolve("Jane.Doe@example.org") == ("i-3", "Jane.Doe@example.org", None)


def test_configured_destination_wins() -> None:
    assert resolve("sales@example.com") == ("i-1", "team@example.com", None)
    assert resolve("anyone@help.example.com") == ("i-2", "help@example.com", None)


def test_plus_tag_matches_the_base_address_and_is_kept() -> None:
    assert resolve("support+billing@example.com") == ("i-1", "support@example.com", "billing")
    assert resolve("jane+x@example.org") == ("i-3", "jane@example.org", "x")


def test_an_exact_route_for_a_tagged_address_wins_over_the_base() -> None:
    routes = (RouteSettings(match="a+b@example.com", instance_id="exact"), *ROUTES)
    assert resolve("a+b@example.com", routes) == ("exact", "a+b@example.com", None)


def test_first_match_wins() -> None:
    routes = (RouteSettings(match="*@example.com", instance_id="first"), *ROUTES)
    assert resolve("support@example.com", routes)[0] == "first"


def test_unknown_mailbox_in_a_served_domain() -> None:
    assert refusal("nobody@example.com").startswith("550 5.1.1")


@pytest.mark.parametrize(
    "address",
    ["user@elsewhere.example", "support%elsewhere.example@example.com", "elsewhere!support@example.com"],
)
def test_relay_attempts(address: str) -> None:
    assert refusal(address).startswith("550 5.7.1")


def test_catch_all_accepts_every_domain() -> None:
    routes = (RouteSettings(match="*", instance_id="sink"),)
    assert resolve("anyone@anywhere.test", routes) == ("sink", "anyone@anywhere.test", None)


def test_catch_all_refuses_what_cannot_be_a_connect_destination() -> None:
    routes = (RouteSettings(match="*", instance_id="sink"),)
    assert refusal("root@localhost", routes).startswith("550 5.1.1")
