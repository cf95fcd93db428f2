"""Three gateways on one shared queue against Connect's quota: how close together they come to it, and
whether they overspend it.

Run: ``.venv/bin/python benchmarks/shared_queue_rate.py [--rate R] [--mails N]`` (needs the sandbox extra:
moto). It starts, on this machine: the embedded AWS (moto's S3, SQS, DynamoDB and CloudFormation, one
request at a time), a stack of ``deploy/aws/cloudformation.yaml`` in it, the Connect emulator throttling
beyond R calls per second, and three ``mail-gateway serve`` processes in sqs mode on the stack's Outputs,
each with ``rate_per_second = R`` (the account's quota: the gateways share it through the table). Six
clients send N mails as an MTA with three MX hosts does. Once every mail is accepted, the backlog drains;
the delivered rate over that drain, as a fraction of R, and the throttled calls are printed (and as JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the tests' harness: the same gateways, stack and clients as the crash test

from gateway.sandbox.emulator import EmulatedConnect, EmulatorServer  # noqa: E402
from tests.helpers import put_faults, wait_until  # noqa: E402
from tests.shared import client, deploy_stack, embedded_aws, gateways, message, send_all  # noqa: E402

PROBES = 40


def stand_in_milliseconds(url: str, stack: dict[str, str]) -> float:
    """What one request to the embedded AWS costs (a DynamoDB write, an S3 put, an SQS send, receive and
    delete, in turn), in milliseconds: moto answers one at a time, so this bounds the requests per second
    of all the gateways together."""
    dynamodb, s3, sqs = client(url, "dynamodb"), client(url, "s3"), client(url, "sqs")
    began = time.perf_counter()
    for number in range(PROBES):
        dynamodb.put_item(TableName=stack["TableName"], Item={"pk": {"S": f"probe#{number}"}})
        s3.put_object(Bucket=stack["BucketName"], Key=f"probe/{number}", Body=b"x" * 4096)
        sqs.send_message(QueueUrl=stack["QueueUrl"], MessageBody='{"probe": 1}')
        for received in sqs.receive_message(QueueUrl=stack["QueueUrl"], WaitTimeSeconds=0).get(
            "Messages", []
        ):
            sqs.delete_message(QueueUrl=stack["QueueUrl"], ReceiptHandle=received["ReceiptHandle"])
    return (time.perf_counter() - began) * 1000 / (PROBES * 5)


async def measure(rate: float, count: int) -> dict[str, float]:
    emulator = EmulatorServer(EmulatedConnect())
    await emulator.start()
    try:
        await put_faults(emulator, throttle_rps=rate)
        with embedded_aws() as url, tempfile.TemporaryDirectory(prefix="shared-bench-") as directory:
            stack = deploy_stack(url)
            milliseconds = stand_in_milliseconds(url, stack)
            mails = {number: message(number) for number in range(count)}
            accepted: set[int] = set()
            queue = {"workers": 4, "rate_per_second": rate, "burst": 2}
            with gateways(Path(directory), emulator, url, stack, **queue) as running:
                began = time.time()
                await send_all([process.port for process in running], mails, accepted)
                sent = time.time()
                await wait_until(lambda: len(emulator.connect.contacts) >= count, seconds=3600, interval=0.2)
        moments = sorted(contact.received_at.timestamp() for contact in emulator.connect.contacts.values())
        draining = [moment for moment in moments if moment >= sent]
        drain_rate = (len(draining) - 1) / (draining[-1] - draining[0]) if len(draining) > 1 else 0.0
        return {
            "limit_calls_per_second": rate,
            "mails": count,
            "accepted_mails_per_second": count / (sent - began),
            "backlog_when_all_accepted": len(draining),
            "drain_contacts_per_second": drain_rate,
            "drain_fraction_of_limit": drain_rate / rate,
            "overall_contacts_per_second": (count - 1) / (moments[-1] - moments[0]),
            "throttled_calls": sum(1 for call in emulator.connect.calls if call["Status"] == 429),
            "calls": len(emulator.connect.calls),
            "stand_in_milliseconds_per_request": milliseconds,
        }
    finally:
        await emulator.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rate", type=float, default=10.0, help="the emulator's throttle (R), calls per second"
    )
    parser.add_argument("--mails", type=int, default=240, help="mails sent through the three gateways")
    args = parser.parse_args()
    results = asyncio.run(measure(args.rate, args.mails))
    print(f"{args.mails} mails, 3 gateways on one queue, emulator throttling beyond {args.rate:g} calls/s")
    print(f"  accepted               {results['accepted_mails_per_second']:6.1f} mails/s")
    print(
        f"  backlog drained at     {results['drain_contacts_per_second']:6.2f} contacts/s = "
        f"{results['drain_fraction_of_limit']:.0%} of R ({results['backlog_when_all_accepted']:.0f} mails)"
    )
    print(f"  throttled calls        {results['throttled_calls']:6.0f} of {results['calls']:.0f}")
    stand_in = results["stand_in_milliseconds_per_request"]
    print(f"  the embedded AWS       {stand_in:6.1f} ms a request, one at a time")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
