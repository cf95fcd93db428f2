"""What the shared queue's tests share: the embedded AWS (moto) as a process, stacks of the real template,
and gateways configured from the stacks' Outputs.

Every test gets its own stack of ``deploy/aws/cloudformation.yaml``, deployed to moto's CloudFormation:
what the gateways run against is what operators deploy (moto ignores the table's TTL and the bucket's
lifecycle, which the gateway does not rely on). Queues stay shallow: moto's SQS slows down on deep ones.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import re
import signal
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import botocore.session
import pytest

from gateway.aws.dynamodb import decode_item
from gateway.config import load_config
from gateway.delivery.shared.admin import run_shared_queue_command
from gateway.sandbox.emulator import EmulatorServer
from gateway.sandbox.s3server import SANDBOX_KEY
from gateway.settings import (
    AttachmentSettings,
    AwsSettings,
    HttpSettings,
    QueueMode,
    QueueSettings,
    RouteSettings,
    Settings,
    SmtpSettings,
)

from .helpers import ROOT, free_port, numbered_mail, send_until_accepted, unavailable

TEMPLATE = ROOT / "deploy" / "aws" / "cloudformation.yaml"
REGION = "us-east-1"
# moto and what its server and the four backends need (moto[s3,sqs,dynamodb,cloudformation,server])
SERVER_MODULES = ("moto", "flask", "flask_cors", "werkzeug", "py_partiql_parser", "cfnlint")
SUPPORT = RouteSettings(match="support@example.com", instance_id="instance-1")


@contextmanager
def embedded_aws() -> Iterator[str]:
    """``python -m gateway.sandbox.aws`` as its own process (the gateways' processes and the test's event
    loop do not share its lock or its interpreter); its URL."""
    missing = [name for name in SERVER_MODULES if importlib.util.find_spec(name) is None]
    if missing:  # under CI a failure, not a skip
        unavailable(f"moto's server and backends (the sandbox extra) are not installed: {', '.join(missing)}")
    with tempfile.TemporaryFile() as errors:  # a file, not a pipe: moto's tracebacks never block it
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.sandbox.aws"],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            cwd=ROOT,
        )
        assert process.stdout is not None
        found = re.match(r"AWS (http://\S+)", process.stdout.readline())
        try:
            if found is None:
                process.wait(timeout=30)
                errors.seek(0)
                said = errors.read()[-2000:].decode(errors="replace")
                pytest.fail(f"the embedded AWS did not start: {said}")
            yield found.group(1)
        finally:
            process.terminate()
            process.wait(timeout=30)
            process.stdout.close()


@functools.cache
def client(url: str, service: str) -> Any:
    """A plain (synchronous) botocore client of the embedded AWS, as an operator's tool would be; one per
    service (making one reads botocore's models for a while, and the tests poll from the gateway's loop)."""
    return botocore.session.get_session().create_client(
        service,
        region_name=REGION,
        endpoint_url=url,
        aws_access_key_id=SANDBOX_KEY,
        aws_secret_access_key=SANDBOX_KEY,
    )


def deploy_stack(url: str, name: str | None = None, **parameters: str | int) -> dict[str, str]:
    """The template deployed as a new stack; its Outputs."""
    name = name or f"t{uuid.uuid4().hex[:10]}"
    cloudformation = client(url, "cloudformation")
    cloudformation.create_stack(
        StackName=name,
        TemplateBody=TEMPLATE.read_text(),
        Parameters=[
            {"ParameterKey": key, "ParameterValue": str(value)}
            for key, value in {"NamePrefix": name, **parameters}.items()
        ],
        Capabilities=["CAPABILITY_NAMED_IAM"],
    )
    cloudformation.get_waiter("stack_create_complete").wait(StackName=name, WaiterConfig={"Delay": 1})
    [stack] = cloudformation.describe_stacks(StackName=name)["Stacks"]
    return {output["OutputKey"]: output["OutputValue"] for output in stack["Outputs"]}


def shared_queue_settings(outputs: Mapping[str, str], **changes: Any) -> QueueSettings:
    values: dict[str, Any] = {
        "mode": QueueMode.SQS,
        "queue_url": outputs["QueueUrl"],
        "table": outputs["TableName"],
        "rate_per_second": 50.0,
        "burst": 10,
        "workers": 2,
        "retry_initial": 0.2,
        "retry_max": 1.0,
        "max_age": 60.0,
        "min_free_disk": 0,
        "shutdown_grace": 5.0,
    }
    values.update(changes)
    return QueueSettings(**values)


def shared_settings(
    emulator: EmulatorServer,
    url: str,
    outputs: Mapping[str, str],
    routes: tuple[RouteSettings, ...] = (
        RouteSettings(match="support@example.com", instance_id="instance-1"),
    ),
    **queue: Any,
) -> Settings:
    """A gateway in sqs mode against the emulator and the embedded AWS, its queue from the Outputs."""
    return Settings(
        smtp=SmtpSettings(host="127.0.0.1", port=0, hostname="mx.gateway.test"),
        aws=AwsSettings(
            region=REGION,
            connect_endpoint_url=emulator.url,
            s3_endpoint_url=url,
            sqs_endpoint_url=url,
            dynamodb_endpoint_url=url,
        ),
        attachments=AttachmentSettings(bucket=outputs["BucketName"], prefix="inbound/"),
        routes=routes,
        queue=shared_queue_settings(outputs, **queue),
        http=HttpSettings(listen=("127.0.0.1", 0)),
    )


def with_queue(settings: Settings, **changes: Any) -> Settings:
    return replace(settings, queue=replace(settings.queue, **changes))


def config_text(
    *, port: int, emulator: EmulatorServer, url: str, outputs: Mapping[str, str], **queue: str | int | float
) -> str:
    """A configuration file for ``mail-gateway serve`` (or ``queue``, ``check``) in sqs mode."""
    lines = "".join(f"{key} = {value!r}\n".replace("'", '"') for key, value in queue.items())
    return f"""
[smtp]
listen = "127.0.0.1:{port}"
hostname = "mx.shared.test"
[aws]
region = "{REGION}"
connect_endpoint_url = "{emulator.url}"
s3_endpoint_url = "{url}"
sqs_endpoint_url = "{url}"
dynamodb_endpoint_url = "{url}"
[attachments]
bucket = "{outputs["BucketName"]}"
[queue]
mode = "sqs"
queue_url = "{outputs["QueueUrl"]}"
table = "{outputs["TableName"]}"
min_free_disk = 0
{lines}[http]
listen = "127.0.0.1:0"
[limits]
max_mails_per_client_per_minute = 100000
[[routes]]
match = "support@example.com"
instance_id = "shared-instance"
"""


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def mail_items(url: str, table: str) -> dict[str, dict[str, Any]]:
    """Every mail item of the table, by id (a scan: fine for a test's few)."""
    dynamodb = client(url, "dynamodb")
    found: dict[str, dict[str, Any]] = {}
    for page in dynamodb.get_paginator("scan").paginate(TableName=table):
        for raw in page["Items"]:
            item = decode_item(raw)
            if str(item["pk"]).startswith("mail#"):
                found[item["id"]] = item
    return found


def queue_depth(url: str, queue_url: str) -> int:
    attributes = client(url, "sqs").get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])[
        "Attributes"
    ]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def keys_under(url: str, bucket: str, prefix: str) -> list[str]:
    answer = client(url, "s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [entry["Key"] for entry in answer.get("Contents", [])]


async def mail_gateway(*arguments: str) -> tuple[int, str]:
    """``mail-gateway ARGUMENTS`` as an operator runs it beside the gateways: its status and output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *arguments,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT,
    )  # fmt: skip
    out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode()


def shared_config(
    directory: Path, emulator: EmulatorServer, url: str, outputs: Mapping[str, str], **queue: Any
) -> Path:
    """A configuration file naming the stack (for ``mail-gateway queue`` and ``check``)."""
    return write_config(
        directory / "shared.toml", config_text(port=0, emulator=emulator, url=url, outputs=outputs, **queue)
    )


async def queue_command(
    config: Path, action: str, mail_id: str | None = None, *, all_dead: bool = False, as_json: bool = False
) -> tuple[int, str]:
    """``mail-gateway queue`` in this process (the CLI's own function; saves a process start)."""
    lines: list[str] = []
    status = await run_shared_queue_command(
        load_config(config), action, mail_id, all_dead, lines.append, as_json
    )
    return status, "".join(f"{line}\n" for line in lines)


# -- several gateway processes on one stack (the crash test and benchmarks/shared_queue_rate.py) ------------

GATEWAYS = 3
CLIENTS = 6


class GatewayProcess:
    """``mail-gateway serve`` as a process of its own: it can be SIGKILLed and started again."""

    def __init__(self, config: Path, port: int) -> None:
        self.config = config
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self.log = config.with_suffix(".log")

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve", "--config", str(self.config)],
                stdout=log, stderr=log, cwd=ROOT,
            )  # fmt: skip

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


@contextmanager
def gateways(
    tmp_path: Path, emulator: EmulatorServer, url: str, stack: dict[str, str], **queue: Any
) -> Iterator[list[GatewayProcess]]:
    """:data:`GATEWAYS` processes in sqs mode on ``stack``; each must stop cleanly (SIGTERM: status 0)."""
    started = []
    try:
        for number in range(GATEWAYS):
            port = free_port()
            text = config_text(port=port, emulator=emulator, url=url, outputs=stack, **queue)
            config = tmp_path / f"gateway-{number}.toml"
            config.write_text(text)
            process = GatewayProcess(config, port)
            process.start()
            started.append(process)
        yield started
    finally:
        codes = [process.stop() for process in started]
        assert codes == [0] * len(started), [p.log.read_text()[-3000:] for p in started]


async def send_all(ports: Sequence[int], mails: dict[int, bytes], accepted: set[int]) -> None:
    """:data:`CLIENTS` MTAs at once, each mail to the gateways on ``ports`` until one accepts it."""
    pending = list(mails)

    async def sender() -> None:
        while pending:
            number = pending.pop()
            await asyncio.to_thread(send_until_accepted, ports, number, mails[number])
            accepted.add(number)

    await asyncio.gather(*(sender() for _ in range(CLIENTS)))


def delivered(emulator: EmulatorServer) -> Counter[str]:
    """How many contacts each Message-ID became."""
    return Counter(
        c.request["EmailMessage"]["RawMessage"]["Headers"]["MESSAGE_ID"]
        for c in emulator.connect.contacts.values()
    )


def message(number: int) -> bytes:
    return numbered_mail(number, "shared")
