"""How fast the gateway accepts mail in spool mode, and how close delivery comes to Connect's limit.

Run: ``.venv/bin/python benchmarks/queue_throughput.py`` (needs Postfix's ``smtp-source``: Debian package
``postfix``). It measures, on this machine, in one run:

1. mails accepted per second by a bare aiosmtpd server that does nothing (the framework's ceiling), and by
   the gateway in spool mode (every mail written durably before its 250), both driven by the same external
   load generator, ``smtp-source``, with the same sessions, messages and sizes;
2. the delivery rate the gateway reaches against an emulator that throttles beyond N calls per second,
   as a fraction of N, with the gateway's own governor set to N.

Every server runs as its own process, as in production. Results are printed as a table and as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BARE_SERVER = """
import asyncio, sys
from aiosmtpd.smtp import SMTP
class Nothing:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"
async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(Nothing(), loop=loop), "127.0.0.1", int(sys.argv[1]))
    await asyncio.Event().wait()
asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def start(
    arguments: list[str], log: Path, environment: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(arguments, stdout=out, stderr=out, cwd=ROOT, env=environment)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


def drive(smtp_source: str, port: int, sessions: int, messages: int, size: int) -> float:
    """Mails per second that smtp-source got accepted."""
    began = time.perf_counter()
    subprocess.run(
        [smtp_source, "-s", str(sessions), "-m", str(messages), "-l", str(size), "-M", "client.test",
         "-f", "customer@client.test", "-t", "support@example.com", f"127.0.0.1:{port}"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return messages / (time.perf_counter() - began)


def inspect(emulator_port: int, what: str) -> list[dict[str, object]]:
    """The emulator's ``contacts`` or ``calls``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{emulator_port}/_emulator/{what}", timeout=30) as response:
        found: list[dict[str, object]] = json.load(response)[what]
        return found


# Smtp-source's sessions all come from one address: lift the per-client limits for this load.
LOAD_LIMITS = """[limits]
max_mails_per_client_per_minute = 1000000
max_connections_per_client = 100
"""


def gateway_config(
    directory: Path,
    smtp: int,
    emulator: int,
    s3: int,
    rate: float,
    burst: int,
    *,
    loop: str = "auto",
    http: str = "127.0.0.1:0",
    extra: str = LOAD_LIMITS,
) -> Path:
    """A spool-mode gateway against the emulator and embedded S3, its governor at ``rate`` and ``burst``;
    ``extra``: more tables of the configuration (this benchmark's per-client limits by default)."""
    config = directory / f"gateway-{loop}.toml"
    config.write_text(
        f"""
[smtp]
listen = "127.0.0.1:{smtp}"
hostname = "mx.bench.test"
event_loop = "{loop}"
[aws]
connect_endpoint_url = "http://127.0.0.1:{emulator}"
s3_endpoint_url = "http://127.0.0.1:{s3}"
[attachments]
bucket = "bench-attachments"
[queue]
path = "{directory / "spool"}"
rate_per_second = {rate}
burst = {burst}
workers = 8
retry_initial = "100ms"
retry_max = "2s"
min_free_disk = 0
[http]
listen = "{http}"
{extra}
[[routes]]
match = "support@example.com"
instance_id = "bench-instance"
"""
    )
    return config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000, help="mails per acceptance run")
    parser.add_argument("--sessions", type=int, default=20, help="parallel SMTP sessions")
    parser.add_argument("--size", type=int, default=4000, help="payload bytes per mail")
    parser.add_argument("--limit", type=float, default=20.0, help="the emulator's throttle, calls per second")
    parser.add_argument("--deliveries", type=int, default=400, help="mails for the delivery-rate run")
    args = parser.parse_args()
    smtp_source = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
    if not os.access(smtp_source, os.X_OK):
        print("smtp-source not found: apt-get install postfix", file=sys.stderr)
        return 1
    environment = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
    serve = [sys.executable, "-m", "gateway", "serve", "--config"]
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as temporary:
        directory = Path(temporary)
        log = directory / "servers.log"

        port = free_port()
        bare = start([sys.executable, "-c", BARE_SERVER, str(port)], log)
        try:
            wait_for_port(port)
            drive(smtp_source, port, args.sessions, 100, args.size)  # warm up
            results["bare_aiosmtpd_mails_per_second"] = drive(
                smtp_source, port, args.sessions, args.messages, args.size
            )
        finally:
            stop(bare)

        emulator_port, s3_port, smtp_port = free_port(), free_port(), free_port()
        emulator = start(
            [sys.executable, "-m", "gateway", "emulate", "--port", str(emulator_port),
             "--s3-port", str(s3_port), "--bucket", "bench-attachments", "--throttle-rps", str(args.limit)],
            log, environment,
        )  # fmt: skip
        try:
            wait_for_port(emulator_port)
            wait_for_port(s3_port)
            # Acceptance: the governor at Connect's default quota, as in production; the spool absorbs.
            config = gateway_config(directory, smtp_port, emulator_port, s3_port, rate=2, burst=5)
            gateway = start([*serve, str(config)], log, environment)
            try:
                wait_for_port(smtp_port)
                drive(smtp_source, smtp_port, args.sessions, 100, args.size)
                results["gateway_spool_mails_per_second"] = drive(
                    smtp_source, smtp_port, args.sessions, args.messages, args.size
                )
            finally:
                stop(gateway)
            shutil.rmtree(directory / "spool")
            urllib.request.urlopen(
                urllib.request.Request(
                    f"http://127.0.0.1:{emulator_port}/_emulator/contacts", method="DELETE"
                )
            ).close()

            # Delivery: queue a backlog, then measure contacts per second against the emulator's limit.
            config = gateway_config(directory, smtp_port, emulator_port, s3_port, rate=args.limit, burst=5)
            gateway = start([*serve, str(config)], log, environment)
            try:
                wait_for_port(smtp_port)
                drive(smtp_source, smtp_port, args.sessions, args.deliveries, args.size)
                while len(found := inspect(emulator_port, "contacts")) < args.deliveries:
                    time.sleep(0.5)
            finally:
                stop(gateway)
            moments = sorted(time.mktime(time.strptime(str(c["ReceivedAt"])[:19], "%Y-%m-%dT%H:%M:%S"))
                             + float("0." + str(c["ReceivedAt"])[20:23]) for c in found)  # fmt: skip
            rate = (len(moments) - 1) / (moments[-1] - moments[0])
            results["delivery_contacts_per_second"] = rate
            results["delivery_limit_calls_per_second"] = args.limit
            results["delivery_fraction_of_limit"] = rate / args.limit
            calls = inspect(emulator_port, "calls")
            results["delivery_throttled_calls"] = sum(1 for call in calls if call["Status"] == 429)
        finally:
            stop(emulator)

    print(f"smtp-source: {args.sessions} sessions, {args.messages} mails of {args.size} bytes payload")
    print(f"  bare aiosmtpd (does nothing)     {results['bare_aiosmtpd_mails_per_second']:8.0f} mails/s")
    print(f"  gateway, spool mode (durable)    {results['gateway_spool_mails_per_second']:8.0f} mails/s")
    print(f"delivery of {args.deliveries} queued mails, emulator throttling beyond {args.limit:g} calls/s")
    print(
        f"  {results['delivery_contacts_per_second']:.1f} contacts/s = "
        f"{results['delivery_fraction_of_limit']:.0%} of the limit, "
        f"{results['delivery_throttled_calls']:.0f} calls throttled"
    )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
