"""``mail-gateway queue`` in sqs mode, run as an operator runs it beside the gateways: list, show, delete,
the redrive of what SQS's redrive policy moved, and ``move --to sqs`` from a spool."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

from gateway.delivery.shared.records import envelope_of
from gateway.delivery.spool import MailState, Spool
from gateway.sandbox.emulator import EmulatorServer
from gateway.sandbox.s3server import EmbeddedS3
from gateway.service.gateway import Gateway
from gateway.settings import AutomaticPolicy, AutomaticSettings, RouteSettings

from ..helpers import (
    CREDENTIALS,
    SmtpClient,
    contacts,
    mail,
    make_settings,
    put_faults,
    spool_settings,
    wait_until,
)
from ..shared import (
    SUPPORT,
    client,
    deploy_stack,
    keys_under,
    mail_gateway,
    mail_items,
    queue_command,
    queue_depth,
    shared_config,
    shared_settings,
)

HELP = RouteSettings(match="*@help.example.com", instance_id="instance-2", destination="help@example.com")


async def test_list_show_and_delete_act_on_the_items_and_the_dead_letter_queue(
    emulator: EmulatorServer, aws_url: str, stack: dict[str, str], tmp_path: Path
) -> None:
    emulator.connect.addresses = ("support@example.com",)  # help@example.com is refused: a dead mail
    settings = shared_settings(emulator, aws_url, stack, routes=(SUPPORT, HELP))
    async with Gateway(settings, CREDENTIALS) as gateway:
        smtp = SmtpClient(gateway.smtp_port)
        _, text = await smtp.send(mail("<done@client.test>"))
        done = text.rsplit(" ", 1)[1]
        _, text = await smtp.send(mail("<dead@client.test>"), recipients=("a@help.example.com",))
        dead = text.rsplit(" ", 1)[1]
        await wait_until(
            lambda: {i["state"] for i in mail_items(aws_url, stack["TableName"]).values()} == {"done", "dead"}
        )
        await wait_until(lambda: mail_items(aws_url, stack["TableName"])[dead].get("notice") is not None)
    config = shared_config(tmp_path, emulator, aws_url, stack)

    status, out = await mail_gateway("queue", "--config", str(config), "list")
    lines = out.splitlines()
    assert status == 0
    assert lines[0] == "queued 0  active 0  deferred 0  dead 1  parked 0  done 1"
    assert [line.split()[:2] for line in lines[1:3]] == [[done, "done"], [dead, "dead"]]
    assert "1 contact" in lines[1]
    assert lines[3] == "dead-letter queue: 1 message(s)"  # the gateway's own: not "moved by the redrive"
    listed = json.loads((await queue_command(config, "list", as_json=True))[1])
    assert listed["counts"]["dead"] == 1 and listed["dead_letter_queue"] == {
        "messages": 1,
        "moved_by_redrive": [],
    }

    status, out = await queue_command(config, "show", dead)
    assert status == 0
    assert f"queue id     {dead}" in out and "state        dead" in out
    assert (
        "contact #0   failed: instance instance-2, destination help@example.com, error: connect: "
        "InvalidRequestException: DestinationEmailAddress help@example.com is not an email address"
    ) in out

    assert await queue_command(config, "delete", dead) == (0, f"{dead} deleted\n")
    assert keys_under(aws_url, stack["BucketName"], f"queue/{dead}/") == []
    status, out = await queue_command(config, "list")
    assert out.splitlines()[0] == "queued 0  active 0  deferred 0  dead 0  parked 0  done 1"
    assert "dead-letter queue: 0 message(s)" in out
    assert await queue_command(config, "show", dead) == (
        1,
        f"no mail {dead} in the shared queue\n",
    )


async def test_what_the_redrive_policy_moved_is_listed_and_redriven(
    emulator: EmulatorServer, aws_url: str, tmp_path: Path
) -> None:
    """A message that made every worker crash lands in the dead-letter queue through SQS's redrive policy,
    its item untouched: ``list`` names it, ``retry --all-dead`` sends it again."""
    stack = deploy_stack(aws_url, VisibilityTimeoutSeconds=4, MaxReceiveCount=1)
    settings = replace(
        shared_settings(emulator, aws_url, stack), automatic=AutomaticSettings(AutomaticPolicy.DROP)
    )
    async with Gateway(settings, CREDENTIALS) as gateway:  # a parked mail: an item and its bytes, no message
        _, text = await SmtpClient(gateway.smtp_port).send(mail(Auto_Submitted="auto-replied"))
    queue_id = text.rsplit("(", 1)[1].rstrip(")")
    sqs = client(aws_url, "sqs")
    sqs.send_message(
        QueueUrl=stack["QueueUrl"],
        MessageBody=envelope_of(mail_items(aws_url, stack["TableName"])[queue_id]).body(),
    )
    for _ in range(2):  # received once (the "crash"), then moved by the redrive policy
        sqs.receive_message(QueueUrl=stack["QueueUrl"], WaitTimeSeconds=1, VisibilityTimeout=0)
    assert queue_depth(aws_url, stack["QueueUrl"]) == 0
    config = shared_config(tmp_path, emulator, aws_url, stack)
    status, out = await queue_command(config, "list")
    assert status == 0
    assert f"{queue_id}  moved there by the redrive policy after " in out
    assert await mail_gateway("queue", "--config", str(config), "retry", "--all-dead") == (
        0,
        f"1 mail(s) queued again: {queue_id}\n",
    )
    async with Gateway(shared_settings(emulator, aws_url, stack), CREDENTIALS):
        await wait_until(lambda: len(contacts(emulator)) == 1, seconds=20)
    assert "dead-letter queue: 0 message(s)" in (await queue_command(config, "list"))[1]


async def test_move_takes_a_stopped_spools_mail_and_threads_into_the_shared_queue(
    emulator: EmulatorServer,
    aws_url: str,
    stack: dict[str, str],
    tmp_path: Path,
    bucket: str,
    s3_server: EmbeddedS3,
) -> None:
    spool_path = tmp_path / "spool"
    spooled = make_settings(
        emulator,
        s3_server,
        bucket,
        routes=(SUPPORT, HELP),
        queue=spool_settings(spool_path, retry_initial=6.0),
    )
    spooled = replace(spooled, automatic=AutomaticSettings(AutomaticPolicy.DROP))
    emulator.connect.addresses = ("support@example.com",)
    config = shared_config(tmp_path, emulator, aws_url, stack, path=str(spool_path))
    async with Gateway(spooled, CREDENTIALS) as gateway:
        smtp = SmtpClient(gateway.smtp_port)
        await smtp.send(mail("<first@client.test>"))
        await wait_until(lambda: len(contacts(emulator)) == 1)  # delivered: its thread is remembered
        first = contacts(emulator)[0].contact_id
        await smtp.send(mail("<refused@client.test>"), recipients=("a@help.example.com",))  # dead
        await smtp.send(mail("<parked@client.test>", Auto_Submitted="auto-replied"))  # parked
        spool = Spool(spool_path, create=False)
        await wait_until(lambda: spool.counts()[MailState.DEAD] == 1)
        await put_faults(emulator, error_rate=1.0)
        await smtp.send(mail("<reply@client.test>", In_Reply_To="<first@client.test>"))  # deferred
        await wait_until(lambda: spool.counts()[MailState.DEFERRED] == 1)
        status, out = await queue_command(config, "move")
        assert (status, out) == (
            1,
            f"queue.path: a gateway is running on the spool at {spool_path}: stop it first\n",
        )
    before = {m.id: m.state for m in spool.mails()}

    status, out = await mail_gateway("queue", "--config", str(config), "move", "--to", "sqs")
    assert (status, out) == (
        0,
        f"moved 3 mail(s) and 1 remembered thread(s) from {spool_path} into the shared queue\n",
    )
    assert {m.state for m in spool.mails()} == {MailState.DONE}  # only the delivered mail stays
    items = mail_items(aws_url, stack["TableName"])
    assert {mail_id: item["state"] for mail_id, item in items.items()} == {
        mail_id: state for mail_id, state in before.items() if state != MailState.DONE
    }
    await put_faults(emulator, error_rate=0.0)
    async with Gateway(shared_settings(emulator, aws_url, stack, routes=(SUPPORT, HELP)), CREDENTIALS):
        await wait_until(lambda: len(contacts(emulator)) == 2, seconds=30)  # the deferred reply, once due
    reply = contacts(emulator)[1].request
    assert reply["EmailMessage"]["RawMessage"]["Headers"]["MESSAGE_ID"] == "<reply@client.test>"
    assert reply["RelatedContactId"] == first  # the spool's memory of threads came along
    assert await queue_command(config, "move") == (
        0,
        f"moved 0 mail(s) and 1 remembered thread(s) from {spool_path} into the shared queue\n",
    )


async def test_check_verifies_the_queues_the_table_and_the_permissions(
    emulator: EmulatorServer, aws_url: str, tmp_path: Path
) -> None:
    """Against a stack of the template with every default: passes, the TTL moto's CloudFormation leaves
    off a warning; against a bare queue and a missing table: each failure named."""
    emulator.connect.addresses = ("support@example.com",)  # SearchEmailAddresses: the route's address
    stack = deploy_stack(aws_url)
    status, out = await mail_gateway(
        "check", "--config", str(shared_config(tmp_path, emulator, aws_url, stack))
    )
    assert status == 0, out
    lines = out.splitlines()
    table = stack["TableName"]
    assert (
        f"PASS queue {stack['QueueUrl']}: visibility timeout 120 s, retention 10.0 days, encrypted" in lines
    )
    dead_letters = stack["DeadLetterQueueUrl"].rsplit("/", 1)[1]  # found through the redrive policy
    assert any(
        re.fullmatch(
            f"PASS dead-letter queue: \\S+/{dead_letters} after 500 receives, retention 14.0 days", line
        )
        for line in lines
    )
    assert f"PASS table {table}: ACTIVE, index by-state" in lines
    assert any(
        line.startswith(f"WARN time to live of table {table}: not enabled on expires_at") for line in lines
    )
    assert "PASS queue permissions: send, receive and delete work" in lines
    assert "PASS table permissions: put, update, get, batch get, query and delete work" in lines
    assert any(line.startswith(f"PASS raw mail under s3://{stack['BucketName']}/queue/") for line in lines)
    assert queue_depth(aws_url, stack["QueueUrl"]) == 0  # its probe message taken out again

    bare = client(aws_url, "sqs").create_queue(
        QueueName=f"bare-{tmp_path.name[-20:]}", Attributes={"MessageRetentionPeriod": "86400"}
    )["QueueUrl"]
    broken = {**stack, "QueueUrl": bare, "TableName": "no-such-table"}
    directory = tmp_path / "broken"
    directory.mkdir()
    status, out = await mail_gateway(
        "check", "--config", str(shared_config(directory, emulator, aws_url, broken))
    )
    assert status == 1
    failures = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert failures[0] == (
        f"FAIL queue {bare}: keeps messages 1.0 days, less than queue.max_age (5.0 days): mail could vanish "
        "before it is given up"
    )
    assert any(
        line.startswith("FAIL table no-such-table: dynamodb: ResourceNotFoundException") for line in failures
    )
