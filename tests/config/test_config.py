"""The configuration file: defaults, every rule, and errors that name the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import Host, load_config, split_host_port
from gateway.config import parse_config as parse_document
from gateway.errors import ConfigError
from gateway.settings import Settings

from ..helpers import ROOT

HOST = Host("mx.host.test", 24 * 1024**3, lambda path: path.is_file())


def parse_config(document: dict[str, Any]) -> Settings:
    return parse_document(document, HOST)


MINIMAL: dict[str, Any] = {
    "attachments": {"bucket": "my-bucket"},
    "routes": [{"match": "support@example.com", "instance_id": "i-1"}],
}


def config(**sections: Any) -> dict[str, Any]:
    document = {
        key: (dict(value) if isinstance(value, dict) else list(value)) for key, value in MINIMAL.items()
    }
    document.update(sections)
    return document


def error_of(document: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(document)
    return str(caught.value)


def test_example_file_loads_and_matches_the_documented_names() -> None:
    settings = load_config(ROOT / "config.example.toml")
    assert (settings.smtp.host, settings.smtp.port) == ("127.0.0.1", 2525)
    assert settings.smtp.hostname == "mx.example.com"
    assert settings.smtp.max_message_size == 41943040
    assert settings.aws.region == "us-east-1"
    assert settings.aws.connect_endpoint_url is None and settings.aws.s3_endpoint_url is None
    assert settings.attachments.bucket == "example-connect-attachments"
    assert settings.attachments.prefix == "inbound/"
    assert settings.attachments.url_expiry_seconds == 21600
    assert settings.routes[0].match == "support@example.com"


def test_minimal_file_gets_defaults() -> None:
    settings = parse_config(config())
    assert settings.smtp.port == 2525
    assert settings.smtp.max_message_size == 40 * 1024 * 1024
    assert settings.attachments.url_expiry_seconds == 21600
    assert settings.routes[0].destination is None


def test_settings_are_frozen() -> None:
    settings = parse_config(config())
    with pytest.raises(AttributeError):
        settings.smtp.port = 25  # type: ignore[misc]


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (config(routes=[]), "routes: at least one"),
        (
            config(routes=[MINIMAL["routes"][0], {"match": "bad match", "instance_id": "i"}]),
            "routes[1].match:",
        ),
        (
            config(routes=[{"match": "*x@example.com", "instance_id": "i"}]),
            "routes[0].match: must be an address",
        ),
        (config(routes=[{"match": "a@example.com"}]), "routes[0].instance_id: is required"),
        (config(routes=[{"match": "a@example.com", "instance_id": "x" * 101}]), "routes[0].instance_id:"),
        (
            config(routes=[{"match": "a@example.com", "instance_id": "i", "destination": "nodot@localhost"}]),
            "routes[0].destination: is not an email address Amazon Connect accepts",
        ),
        (
            config(
                routes=[
                    {"match": "a@example.com", "instance_id": "i", "references": {"k": {"Type": "EMAIL"}}}
                ]
            ),
            "routes[0].references:",
        ),
        (
            config(routes=[{"match": "a@example.com", "instance_id": "i", "attributes": {"k": 1}}]),
            "routes[0].attributes:",
        ),
        (
            config(routes=[{"match": "a@example.com", "instance_id": "i", "unknown": 1}]),
            "routes[0].unknown: unknown key",
        ),
        (
            config(routes=[MINIMAL["routes"][0], {"match": "SUPPORT@example.com", "instance_id": "i"}]),
            "routes[1].match: is the same as routes[0].match",
        ),
        (
            config(routes=[{"match": "a@example.com", "instance_id": "i", "related_contact_header": "X: y"}]),
            "routes[0].related_contact_header: must be a header name",
        ),
        (config(smtp={"listen": "nowhere"}), "smtp.listen: must be host:port"),
        (config(smtp={"listen": "127.0.0.1:99999"}), "smtp.listen: the port"),
        (config(smtp={"max_message_size": 0}), "smtp.max_message_size: must be greater than 0"),
        (config(smtp={"max_message_size": True}), "smtp.max_message_size: must be an integer"),
        (config(smtp={"lisen": "x"}), "smtp.lisen: unknown key"),
        (config(aws={"connect_endpoint_url": "localhost:8025"}), "aws.connect_endpoint_url: must be an http"),
        (config(attachments={"bucket": "Bad_Bucket"}), "attachments.bucket: is not a valid S3 bucket name"),
        (config(attachments={}), "attachments.bucket: is required"),
        (
            config(attachments={"bucket": "b-1", "prefix": "/x"}),
            "attachments.prefix: must not start with '/'",
        ),
        (
            config(attachments={"bucket": "b-1", "prefix": "p" * 201}),
            "attachments.prefix: must be at most 200",
        ),
        (config(attachments={"bucket": "b-1", "url_expiry_seconds": 0}), "attachments.url_expiry_seconds:"),
        (config(attachments={"bucket": "b-1", "sse": "rot13"}), "attachments.sse:"),
        (config(attachments={"bucket": "b-1", "kms_key_id": "k"}), "attachments.kms_key_id:"),
        ({"routes": MINIMAL["routes"]}, "[attachments]: this section is required"),
        (config(extra={}), "extra: unknown key"),
        (
            config(attachments={"bucket": "b-1", "allowed_file_types": "pdf"}),
            "attachments.allowed_file_types:",
        ),
        (
            config(attachments={"bucket": "b-1", "max_file_size": "lots"}),
            "attachments.max_file_size: must be a size",
        ),
        (config(attachments={"bucket": "b-1", "store_original": "never"}), "attachments.store_original:"),
        (config(message={"prefer_body": "rtf"}), 'message.prefer_body: must be "html" or "text"'),
        (config(queue={"mode": "fast"}), 'queue.mode: must be "spool", "sync" or "sqs"'),
        (
            config(tls={"certificate": "/no/such/file"}),
            "tls.certificate: /no/such/file is not a readable file",
        ),
        (config(tls={"require_tls": True}), "tls.require_tls: needs a certificate and key"),
        (
            config(auth={"credentials": "/no/such/file"}),
            "auth.credentials: /no/such/file is not a readable file",
        ),
        (config(access={"clients": ["10.0.0.0/33"]}), "access.clients: is not a list of networks"),
        (
            config(access={"without_auth": ["10.0.0.0/8"]}),
            "access.without_auth: the other networks would have no way in",
        ),
        (config(access={"proxy_protocol": True}), "access.proxy_trusted: list the load balancers"),
        (
            config(access={"relay_networks": "10.0.0.0/8"}),
            "access.relay_networks: must be a list of networks",
        ),
        (config(access={"senders_deny": "x"}), "access.senders_deny: must be a list of sender patterns"),
        (config(limits={"max_recipients": 0}), "limits.max_recipients: must be at least 1"),
        (config(limits={"data_timeout": "soon"}), "limits.data_timeout: must be a duration"),
        (config(automatic={"policy": "ignore"}), 'automatic.policy: must be "forward", "refuse" or "drop"'),
        (config(queue={"max_age": "forever"}), "queue.max_age: must be a duration"),
        (config(queue={"retry_initial": "1h", "retry_max": "1m"}), "queue.retry_max: must not be shorter"),
        (config(queue={"smarthost": "nohost"}), "queue.smarthost: must be host:port"),
        (
            config(routes=[{"match": "a@example.com", "instance_id": "i", "sender_from_reply_to": "yes"}]),
            "routes[0].sender_from_reply_to: must be true or false",
        ),
        (
            config(
                routes=[
                    {
                        "match": "a@example.com",
                        "instance_id": "i",
                        "references": {f"k{n}": {"Type": "STRING", "Value": "x" * 700} for n in range(5)},
                    }
                ]
            ),
            "routes[0].references: at most 3072 bytes in all",
        ),
    ],
)
def test_bad_values_name_their_key(document: dict[str, Any], expected: str) -> None:
    assert expected in error_of(document)


def test_route_values_reach_the_settings() -> None:
    route = {
        "match": "*@example.com",
        "instance_id": "i-1",
        "destination": "support@example.com",
        "contact_flow_id": "flow-1",
        "attributes": {"team": "billing"},
        "segment_attributes": {"connect:Subtype": {"ValueString": "connect:Email"}},
        "references": {"Portal": {"Type": "URL", "Value": "https://portal.example.com"}},
        "name": "Inbound",
        "description": "From the gateway",
    }
    settings = parse_config(config(routes=[route], aws={"s3_endpoint_url": ""}))
    parsed = settings.routes[0]
    assert parsed.contact_flow_id == "flow-1"
    assert parsed.attributes == {"team": "billing"}
    assert parsed.references["Portal"]["Type"] == "URL"
    assert parsed.name == "Inbound" and parsed.description == "From the gateway"
    assert settings.aws.s3_endpoint_url is None  # empty means unset


def test_load_config_reports_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[smtp\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:25", ("127.0.0.1", 25)), ("[::1]:2525", ("::1", 2525)), ("0.0.0.0:0", ("0.0.0.0", 0))],
)
def test_split_host_port(text: str, expected: tuple[str, int]) -> None:
    assert split_host_port(text) == expected


def test_content_and_queue_settings() -> None:
    settings = parse_config(
        config(
            attachments={
                "bucket": "b-1",
                "allowed_file_types": ["PDF", ".eml", "ics"],
                "max_file_size": "5MiB",
            },
            message={"prefer_body": "text"},
            queue={"mode": "sync", "max_age": "2d", "retry_initial": "250ms", "smarthost": "relay.local:25"},
        )
    )
    assert settings.attachments.allowed_file_types == (".eml", ".ics", ".pdf")
    assert settings.attachments.max_file_size == 5 * 1024 * 1024
    assert settings.content_policy.prefer_body == "text"
    assert settings.queue.max_age == 2 * 86400
    assert settings.queue.retry_initial == 0.25
    assert settings.queue.smarthost == ("relay.local", 25)
    anything = parse_config(config(attachments={"bucket": "b-1", "allowed_file_types": ["*"]}))
    assert anything.content_policy.allowed_file_types is None


def test_front_door_settings(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("x")
    (tmp_path / "key.pem").write_text("x")
    (tmp_path / "users").write_text("")
    settings = parse_config(
        config(
            tls={"certificate": str(tmp_path / "cert.pem"), "key": str(tmp_path / "key.pem"),
                 "require_tls": True, "implicit_listen": "0.0.0.0:465"},
            auth={"credentials": str(tmp_path / "users"), "max_failures": 3},
            access={"without_auth": ["10.0.0.0/8", "2001:db8::/32"], "senders_deny": ["*@Spam.test"],
                    "proxy_protocol": True, "proxy_trusted": ["10.1.0.0/16"]},
            limits={"max_recipients": 20, "command_timeout": "30s", "max_line_length": "1MiB"},
            automatic={"policy": "drop"},
        )
    )  # fmt: skip
    assert settings.tls.require_tls
    assert settings.tls.implicit_listen == ("0.0.0.0", 465)
    assert settings.auth.max_failures == 3
    assert [str(n) for n in settings.access.without_auth] == ["10.0.0.0/8", "2001:db8::/32"]
    assert settings.access.senders_deny == ("*@spam.test",)
    assert [str(n) for n in settings.access.relay_networks] == ["127.0.0.0/8", "::1/128"]  # the default
    assert settings.limits.max_recipients == 20
    assert settings.limits.command_timeout == 30
    assert settings.limits.max_line_length == 1024 * 1024
    assert settings.automatic.policy == "drop"


def test_relay_networks_can_be_widened_or_emptied() -> None:
    relays = parse_config(config(access={"relay_networks": ["10.20.0.0/16", "2001:db8::/64"]}))
    assert [str(n) for n in relays.access.relay_networks] == ["10.20.0.0/16", "2001:db8::/64"]
    assert parse_config(config(access={"relay_networks": []})).access.relay_networks == ()
