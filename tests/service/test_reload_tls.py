"""A reload re-reads the TLS certificate and the AUTH credentials, refuses files that do not load, and keeps
what needs a restart."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from dataclasses import replace
from pathlib import Path

import pytest
import trustme

from gateway.errors import StartupError
from gateway.frontdoor.credentials import hash_password
from gateway.service.gateway import Gateway
from gateway.settings import AuthSettings, Settings, TlsSettings

from ..helpers import CREDENTIALS


def issued(tmp_path: Path, name: str) -> tuple[trustme.CA, TlsSettings]:
    ca = trustme.CA()
    certificate = ca.issue_cert("localhost", "127.0.0.1")
    certificate.private_key_pem.write_to_path(tmp_path / f"{name}-key.pem")
    certificate.cert_chain_pems[0].write_to_path(tmp_path / f"{name}-cert.pem")
    return ca, TlsSettings(certificate=tmp_path / f"{name}-cert.pem", key=tmp_path / f"{name}-key.pem")


def users(tmp_path: Path, user: str, password: str) -> AuthSettings:
    path = tmp_path / f"{user}.users"
    path.write_text(f"{user}:{hash_password(password, rounds=4)}\n")
    return AuthSettings(credentials=path)


def logged_in(port: int, ca: trustme.CA, user: str, password: str) -> bool:
    """STARTTLS trusting only ``ca``, then AUTH; False when the login is refused."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.starttls(context=context)
        try:
            client.login(user, password)
        except smtplib.SMTPAuthenticationError:
            return False
        return True


async def test_certificates_and_credentials_are_read_again(settings: Settings, tmp_path: Path) -> None:
    old_ca, old_tls = issued(tmp_path, "old")
    new_ca, new_tls = issued(tmp_path, "new")
    first = replace(settings, tls=old_tls, auth=users(tmp_path, "alice", "old secret"))
    async with Gateway(first, CREDENTIALS) as gateway:
        port = gateway.smtp_port

        async def login(ca: trustme.CA, user: str, password: str) -> bool:
            return await asyncio.to_thread(logged_in, port, ca, user, password)

        assert await login(old_ca, "alice", "old secret")

        # A key that is not the certificate's: refused whole, the old certificate and users stay.
        broken = replace(new_tls, key=old_tls.key)
        with pytest.raises(StartupError, match=r"tls\.key: .* is not the key of the certificate"):
            await gateway.reload(replace(first, tls=broken, auth=users(tmp_path, "bob", "new secret")))
        assert await login(old_ca, "alice", "old secret")

        await gateway.reload(replace(first, tls=new_tls, auth=users(tmp_path, "bob", "new secret")))
        assert await login(new_ca, "bob", "new secret")
        assert not await login(new_ca, "alice", "old secret")
        with pytest.raises(ssl.SSLCertVerificationError):
            await login(old_ca, "bob", "new secret")


async def test_tls_can_be_turned_on_by_a_reload(settings: Settings, tmp_path: Path) -> None:
    ca, tls = issued(tmp_path, "first")
    async with Gateway(settings, CREDENTIALS) as gateway:
        await gateway.reload(replace(settings, tls=tls, auth=users(tmp_path, "carol", "secret")))
        assert await asyncio.to_thread(logged_in, gateway.smtp_port, ca, "carol", "secret")


def test_settings_that_need_a_restart_are_named_and_kept(settings: Settings) -> None:
    from gateway.service.reload import needs_restart, with_restart_settings_of
    from gateway.settings import QueueMode, RouteSettings

    new = replace(
        settings,
        smtp=replace(settings.smtp, port=2526, hostname="mx2.gateway.test"),
        queue=replace(settings.queue, mode=QueueMode.SPOOL, path=Path("/elsewhere"), rate_per_second=9.0),
        routes=(*settings.routes, RouteSettings(match="new@example.com", instance_id="instance-3")),
    )
    assert needs_restart(settings, new) == ["smtp.listen", "queue.path", "queue.mode"]
    kept = with_restart_settings_of(settings, new)
    assert (kept.smtp.port, kept.queue.path, kept.queue.mode) == (
        settings.smtp.port,
        settings.queue.path,
        settings.queue.mode,
    )
    assert kept.smtp.hostname == "mx2.gateway.test" and kept.queue.rate_per_second == 9.0
    assert kept.routes == new.routes
    assert needs_restart(settings, kept) == []


def test_in_sqs_mode_the_shared_queue_and_where_it_is_reached_need_a_restart(settings: Settings) -> None:
    from gateway.service.reload import needs_restart, with_restart_settings_of
    from gateway.settings import QueueMode, QuotaSettings

    queue = replace(settings.queue, mode=QueueMode.SQS, queue_url="http://127.0.0.1:1/1/q", table="state")
    running = replace(settings, queue=queue)
    new = replace(
        running,
        aws=replace(running.aws, region="eu-west-2", dynamodb_endpoint_url="http://127.0.0.1:2"),
        queue=replace(queue, queue_url="http://127.0.0.1:1/1/other", table="other", prefix="raw/", burst=9),
        quotas=(QuotaSettings("eu-west-2", rate_per_second=7.0),),
    )
    assert needs_restart(running, new) == [
        "queue.queue_url",
        "queue.table",
        "queue.prefix",
        "aws.region (where the shared queue is reached)",
        "aws.dynamodb_endpoint_url",
    ]
    kept = with_restart_settings_of(running, new)
    assert (kept.queue.queue_url, kept.queue.table, kept.queue.prefix) == (
        queue.queue_url,
        queue.table,
        queue.prefix,
    )
    assert (kept.aws.region, kept.aws.dynamodb_endpoint_url) == (running.aws.region, None)
    assert kept.queue.burst == 9 and kept.quotas == new.quotas  # the budgets do change
    assert needs_restart(running, kept) == []
    # A changed mode is named once: not also as the shared queue's settings it brings.
    assert needs_restart(settings, new) == ["queue.mode"]


def test_what_the_running_queue_was_opened_with_stays_until_a_restart(settings: Settings) -> None:
    """Sync mode parks automatic mail only in a spool opened at start; sqs mode writes raw mail to the
    bucket (and with the encryption) it was opened with."""
    from gateway.service.reload import needs_restart, with_restart_settings_of
    from gateway.settings import AutomaticPolicy, QueueMode

    running = replace(settings, queue=replace(settings.queue, mode=QueueMode.SYNC))
    dropping = replace(running, automatic=replace(running.automatic, policy=AutomaticPolicy.DROP))
    assert needs_restart(running, dropping) == [
        "automatic.policy (in sync mode, parking needs the spool opened at start)"
    ]
    assert with_restart_settings_of(running, dropping).automatic.policy == running.automatic.policy

    queue = replace(settings.queue, mode=QueueMode.SQS, queue_url="http://127.0.0.1:1/1/q", table="state")
    shared = replace(settings, queue=queue)
    moved = replace(shared, attachments=replace(shared.attachments, bucket="elsewhere", sse="aws:kms"))
    assert needs_restart(shared, moved) == [
        "attachments.bucket (where raw mail waits)",
        "attachments.sse, attachments.kms_key_id",
    ]
    kept = with_restart_settings_of(shared, moved)
    assert (kept.attachments.bucket, kept.attachments.sse) == (
        shared.attachments.bucket,
        shared.attachments.sse,
    )
