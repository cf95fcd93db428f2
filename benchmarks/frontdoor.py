"""The front door's cost next to the framework's floor, in one run: memory, sessions, accept rate, CPU.

Run: ``.venv/bin/python benchmarks/frontdoor.py`` (needs Postfix's ``smtp-source`` for the accept rate).
Every server is its own process; the emulator and the embedded S3 share another. Each figure is printed
with the reference measured in the same run and their ratio (issue 12's goals in the last column):

- peak RSS (summed over the gateway's process tree: its reader processes included) for one
  25 MB mail of 5 PDFs, received and delivered, against bare aiosmtpd receiving it;
- peak RSS growth for one 40 MiB DATA of 2-byte lines, until the 250 (and, apart, while it is delivered);
- 1,000 sessions at once (all connected, then all send a 2 KB mail): how many got a 250, and the peak RSS;
- mails accepted per second in spool mode, ``smtp-source`` with 20 sessions of 2 KB mails, on asyncio's
  loop and on uvloop, against bare aiosmtpd on each (both running, taking turns: the median of 3 runs each);
- CPU per delivered mail (plain 2 KB; 2 x 100 KB PDFs) against the floor: bare aiosmtpd's CPU to accept the
  same mails plus a plain aiobotocore client's to make the same PutObject, presign and StartEmailContact
  calls against the same emulator and S3.

The sender checks and filters of ``[authentication]`` and ``[filters]`` are off; ``--only filters`` (run by
default when rspamd and clamd are installed) measures the filters' cost apart: the same mails with and
without rspamd and clamd, the engines' CPU apart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import smtplib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from email.policy import SMTP
from pathlib import Path

from queue_throughput import ROOT, drive, free_port, gateway_config, inspect, start, stop, wait_for_port

sys.path.insert(0, str(ROOT))
from tests.helpers import make_mail
from tests.processes import PeakSampler, settled, tree, tree_cpu_seconds, tree_rss

MIB = 1024 * 1024
ROUNDS = 3  # accept-rate runs of each server, taking turns
RCPT = "support@example.com"
SENDER = "customer@client.test"
ENVIRONMENT = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}

# aiosmtpd doing nothing but accept (it holds each DATA in memory); backlog as Postfix's (and the gateway's
# default for 1,000 connections); argv: port, "uvloop" or "asyncio".
BARE_SERVER = """
import asyncio, sys
from aiosmtpd.smtp import SMTP
class Nothing:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"
async def main():
    loop = asyncio.get_running_loop()
    await loop.create_server(lambda: SMTP(Nothing(), loop=loop, data_size_limit=0), "127.0.0.1",
                             int(sys.argv[1]), backlog=2048)
    await asyncio.Event().wait()
if sys.argv[2] == "uvloop":
    import uvloop
    uvloop.run(main())
else:
    asyncio.run(main())
"""

# The delivery floor: the same calls the gateway makes for each mail, from a plain aiobotocore client.
# stdin: JSON {"requests": [StartEmailContact request...], "files": [[name, hex]...]}; prints CPU seconds.
FLOOR_CLIENT = """
import asyncio, json, resource, sys, uuid
from aiobotocore.session import get_session
job = json.load(sys.stdin)
files = [(name, bytes.fromhex(body)) for name, body in job["files"]]
async def main():
    session = get_session()
    async with session.create_client("s3", endpoint_url=sys.argv[1], region_name="us-east-1") as s3, \\
            session.create_client("connect", endpoint_url=sys.argv[2], region_name="us-east-1") as connect:
        await connect.start_email_contact(**{**job["requests"][0], "ClientToken": uuid.uuid4().hex})  # warm
        before = resource.getrusage(resource.RUSAGE_SELF)
        for request in job["requests"]:
            attachments = []
            for index, (name, body) in enumerate(files):
                key = f"floor/{uuid.uuid4().hex}/{index}"
                await s3.put_object(Bucket="bench-attachments", Key=key, Body=body)
                url = await s3.generate_presigned_url(
                    "get_object", Params={"Bucket": "bench-attachments", "Key": key}, ExpiresIn=21600)
                attachments.append({"FileName": name, "S3Url": url})
            call = {**request, "ClientToken": uuid.uuid4().hex}
            if attachments:
                call["Attachments"] = attachments
            await connect.start_email_contact(**call)
        after = resource.getrusage(resource.RUSAGE_SELF)
    print(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
asyncio.run(main())
"""


def pdf(size: int) -> bytes:
    return b"%PDF-1.4\n" + os.urandom(size - 9)


def mail_with(files: list[tuple[str, bytes]], text: str = "hello") -> bytes:
    attachments = [(name, "application/pdf", body) for name, body in files]
    return make_mail(sender=SENDER, subject="bench", text=text, attachments=attachments).as_bytes(policy=SMTP)


def plain_mail(number: int) -> bytes:
    return make_mail(sender=SENDER, subject=f"bench {number}", text="x" * 1900).as_bytes(policy=SMTP)


def lines_mail(size: int) -> bytes:
    header = f"From: {SENDER}\r\nTo: {RCPT}\r\nSubject: lines\r\n\r\n".encode()
    return header + b"\r\n" * ((size - len(header)) // 2)


def send(port: int, raw: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=300) as client:
        client.sendmail(SENDER, [RCPT], raw)


def send_all(port: int, mails: list[bytes], sessions: int = 8) -> None:
    def one(index: int) -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=300) as client:
            for raw in mails[index::sessions]:
                client.sendmail(SENDER, [RCPT], raw)

    with ThreadPoolExecutor(sessions) as pool:
        list(pool.map(one, range(sessions)))


def contacts(emulator: int) -> int:
    return len(inspect(emulator, "contacts"))


def clear(emulator: int) -> None:
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{emulator}/_emulator/contacts", method="DELETE")
    urllib.request.urlopen(request, timeout=30).close()


def until(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


async def sessions_at_once(port: int, count: int, raw: bytes) -> int:
    """``count`` sessions connect and say EHLO; when all are in, each sends one mail. The 250s."""
    everyone_in = asyncio.Event()
    arrived = 0

    async def session() -> bool:
        nonlocal arrived
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 120)
            await reader.readline()
            writer.write(b"EHLO client.test\r\n")
            while (await reader.readline())[3:4] == b"-":
                pass
        except (OSError, TimeoutError):
            return False
        finally:
            arrived += 1
            if arrived == count:
                everyone_in.set()
        await everyone_in.wait()
        try:
            for command in (f"MAIL FROM:<{SENDER}>", f"RCPT TO:<{RCPT}>", "DATA"):
                writer.write(command.encode() + b"\r\n")
                await reader.readline()
            writer.write(raw.replace(b"\r\n.", b"\r\n..") + b".\r\n")
            reply = await asyncio.wait_for(reader.readline(), 300)
            writer.write(b"QUIT\r\n")
            await writer.drain()
            writer.close()
            return reply.startswith(b"250")
        except (OSError, TimeoutError):
            return False

    return sum(await asyncio.gather(*(session() for _ in range(count))))


class Servers:
    """The emulator with S3 (one process), and a gateway or a bare server started on demand."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.log = directory / "servers.log"
        self.emulator, self.s3 = free_port(), free_port()
        self._emulator = start(
            [sys.executable, "-m", "gateway", "emulate", "--port", str(self.emulator),
             "--s3-port", str(self.s3), "--bucket", "bench-attachments"],
            self.log, ENVIRONMENT,
        )  # fmt: skip
        wait_for_port(self.emulator)
        wait_for_port(self.s3)

    def bare(self, loop: str = "asyncio") -> tuple[subprocess.Popen[bytes], int]:
        port = free_port()
        process = start([sys.executable, "-c", BARE_SERVER, str(port), loop], self.log)
        wait_for_port(port)
        time.sleep(0.5)
        return process, port

    def gateway(
        self, loop: str = "asyncio", rate: float = 1000, extra: str = "", burst: int = 100
    ) -> tuple[subprocess.Popen[bytes], int]:
        """Spool mode with the default limits (max_connections 1,000 where memory affords it; loopback is
        a relay network, so the per-client limits do not apply); ``rate`` and ``burst``: the governor (2
        and 2, Connect's default quota, keep delivery from competing with the accepting: a few contacts a
        second, as a real account's quota would)."""
        shutil.rmtree(self.directory / "spool", ignore_errors=True)
        port = free_port()
        config = gateway_config(
            self.directory, port, self.emulator, self.s3, rate, burst, loop=loop, http="", extra=extra
        )
        process = start(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config)], self.log, ENVIRONMENT
        )
        wait_for_port(port)
        clear(self.emulator)
        send(port, plain_mail(-1))  # a first mail warms the reader: part of "idle"
        until(lambda: contacts(self.emulator) >= 1, 60)
        until(lambda: settled(process.pid, 1), 30)  # every reader has imported what it needs
        clear(self.emulator)
        return process, port

    def close(self) -> None:
        stop(self._emulator)


def row(
    name: str, gateway: float, reference: float, unit: str, goal: str, fmt: str = "{:.1f}"
) -> dict[str, str]:
    ratio = gateway / reference if reference else float("nan")
    return {
        "figure": name,
        "gateway": fmt.format(gateway) + unit,
        "reference": fmt.format(reference) + unit,
        "ratio": f"{ratio:.2f}x",
        "goal": goal,
    }


def bare_memory(servers: Servers, raw: bytes) -> tuple[int, int]:
    """Bare aiosmtpd's RSS before ``raw``, and its peak while it receives it."""
    bare, port = servers.bare()
    try:
        idle = tree_rss(bare.pid)
        with PeakSampler(bare.pid) as sampler:
            send(port, raw)
        return idle, sampler.peak
    finally:
        stop(bare)


def memory_of_a_large_mail(servers: Servers, results: list[dict[str, str]]) -> None:
    raw = mail_with([(f"{n}.pdf", pdf(3_700_000)) for n in range(5)])
    _, bare_peak = bare_memory(servers, raw)
    gateway, port = servers.gateway()
    try:
        with PeakSampler(gateway.pid) as sampler:
            send(port, raw)
            delivered = until(lambda: contacts(servers.emulator) >= 1, 300)
        gateway_peak = sampler.peak
    finally:
        stop(gateway)
    name = f"peak RSS, one {len(raw) / 1e6:.1f} MB mail (5 PDFs) received" + (
        " and delivered" if delivered else ""
    )
    results.append(row(name, gateway_peak / MIB, bare_peak / MIB, " MiB", "<= 1.0x"))


def memory_of_short_lines(servers: Servers, results: list[dict[str, str]]) -> None:
    raw = lines_mail(40 * MIB)
    bare_idle, bare_peak = bare_memory(servers, raw)
    bare_growth = bare_peak - bare_idle
    gateway, port = servers.gateway()
    try:
        idle = tree_rss(gateway.pid)
        with PeakSampler(gateway.pid) as sampler:
            send(port, raw)
        growth = sampler.peak - idle
        with PeakSampler(gateway.pid) as delivery:
            delivered = until(lambda: contacts(servers.emulator) >= 1, 120)
        delivery_growth = delivery.peak - idle
    finally:
        stop(gateway)
    name = "peak RSS growth, 40 MiB of 2-byte lines, until the 250"
    results.append(row(name, growth / MIB, bare_growth / MIB, " MiB", "<= 60 MiB (1.5 x 40 MiB)"))
    name = "  the same, while it is read and delivered" + ("" if delivered else " (not within 120 s)")
    results.append(row(name, delivery_growth / MIB, bare_growth / MIB, " MiB", "(reader processes)"))


def thousand_sessions(servers: Servers, results: list[dict[str, str]], count: int) -> None:
    raw = plain_mail(0)
    figures = {}
    for kind in ("bare", "gateway"):
        process, port = servers.bare() if kind == "bare" else servers.gateway()
        try:
            began = time.perf_counter()
            with PeakSampler(process.pid) as sampler:
                accepted = asyncio.run(sessions_at_once(port, count, raw))
            figures[kind] = (accepted, sampler.peak, time.perf_counter() - began)
        finally:
            stop(process)
    (accepted, peak, seconds), (bare_accepted, bare_peak, bare_seconds) = figures["gateway"], figures["bare"]
    name = f"{count} sessions at once, 2 KB mail each: 250s ({seconds:.1f} s; bare {bare_seconds:.1f} s)"
    results.append(row(name, accepted, bare_accepted, "", f"{count} of {count}", "{:.0f}"))
    results.append(
        row(f"  peak RSS of the {count} sessions", peak / MIB, bare_peak / MIB, " MiB", "< 300 MiB")
    )


def accept_rate(servers: Servers, results: list[dict[str, str]], messages: int, loops: list[str]) -> None:
    smtp_source = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
    if not os.access(smtp_source, os.X_OK):
        print("smtp-source not found (apt-get install postfix): no accept rate", file=sys.stderr)
        return
    for loop in loops:
        # Both servers run side by side and take turns, ROUNDS times each; the median of each is compared,
        # so that a noisy moment of a shared machine does not land on one side only.
        rates: dict[str, list[float]] = {"bare": [], "gateway": []}
        bare, bare_port = servers.bare(loop)
        try:
            gateway, gateway_port = servers.gateway(loop, rate=2, burst=2)
            try:
                turns = [("bare", bare_port), ("gateway", gateway_port)]
                for _, port in turns:
                    drive(smtp_source, port, 20, 200, 2000)  # warm up
                for round_ in range(ROUNDS):
                    for kind, port in turns if round_ % 2 == 0 else turns[::-1]:  # who goes first alternates
                        rates[kind].append(drive(smtp_source, port, 20, messages, 2000))
            finally:
                stop(gateway)
        finally:
            stop(bare)
        results.append(row(f"accepted per second, spool mode, 20 sessions, 2 KB ({loop}; median of {ROUNDS})",
                           statistics.median(rates["gateway"]), statistics.median(rates["bare"]), "/s",
                           ">= 0.9x (stretch 1.2x)", "{:.0f}"))  # fmt: skip


def cpu_per_mail(servers: Servers, results: list[dict[str, str]], count: int, loop: str) -> None:
    kinds = {
        "plain 2 KB": ([], "<= 1.5x"),
        "2 x 100 KB PDFs": ([(f"{n}.pdf", pdf(100_000)) for n in range(2)], "<= 1.2x"),
    }
    for name, (files, goal) in kinds.items():
        warm = [mail_with(files, text=f"warm {n} " + "x" * 1900) for n in range(20)]
        mails = [mail_with(files, text=f"mail {n} " + "x" * 1900) for n in range(count)]
        gateway, port = servers.gateway(loop)
        try:
            send_all(port, warm)  # warm up: the readers' processes start and import at the first mails
            until(lambda: contacts(servers.emulator) >= 20, 120)
            clear(servers.emulator)
            before = tree_cpu_seconds(gateway.pid)
            send_all(port, mails)
            if not until(lambda: contacts(servers.emulator) >= count, 600):
                print(f"{name}: not every mail was delivered within 600 s", file=sys.stderr)
            gateway_cpu = tree_cpu_seconds(gateway.pid) - before
        finally:
            stop(gateway)
        bare, port = servers.bare(loop)
        try:
            send_all(port, mails[:20])  # warm up
            before = tree_cpu_seconds(bare.pid)
            send_all(port, mails)
            accept_cpu = tree_cpu_seconds(bare.pid) - before
        finally:
            stop(bare)
        floor = floor_delivery_cpu(servers, mails, files)
        label = (
            f"CPU per delivered mail, {name} ({loop}; floor: accept {accept_cpu / count * 1000:.2f} "
            f"+ SDK calls {floor / count * 1000:.2f})"
        )
        gateway_ms, floor_ms = gateway_cpu / count * 1000, (accept_cpu + floor) / count * 1000
        results.append(row(label, gateway_ms, floor_ms, " ms", goal, "{:.2f}"))


def filters_cost(servers: Servers, results: list[dict[str, str]], count: int) -> None:
    """The same plain mails with and without ``[filters]`` (rspamd and clamd, as the trust tests start
    them): the gateway's CPU per mail, and the engines' own apart."""
    from tests.trust.servers import TestDns, clamd, rspamd

    mails = [mail_with([], text=f"judged {n} " + "x" * 1900) for n in range(count)]
    dns = TestDns()
    dns.start()
    try:
        with rspamd(dns.port) as spam, clamd() as virus:
            engines = _children_named(("rspamd", "clamd"))
            extra = f'[filters]\nrspamd_url = "{spam.url}"\nclamd_address = "unix:{virus.socket}"\n'
            figures = {}
            for kind, text in (("without", ""), ("with", extra)):
                gateway, port = servers.gateway(extra=text)
                try:
                    before = tree_cpu_seconds(gateway.pid)
                    engines_before = sum(tree_cpu_seconds(pid) for pid in engines)
                    began = time.perf_counter()
                    send_all(port, mails)
                    accept_seconds = time.perf_counter() - began
                    until(lambda: contacts(servers.emulator) >= count, 600)
                    cpu = tree_cpu_seconds(gateway.pid) - before
                    engines_cpu = sum(tree_cpu_seconds(pid) for pid in engines) - engines_before
                    figures[kind] = (cpu / count * 1000, engines_cpu / count * 1000, count / accept_seconds)
                finally:
                    stop(gateway)
    finally:
        dns.stop()
    (cpu, engines_ms, rate), (plain_cpu, _, plain_rate) = figures["with"], figures["without"]
    name = (
        f"CPU per delivered mail, plain 2 KB, with rspamd and clamd (the engines' own: {engines_ms:.1f} ms)"
    )
    results.append(row(name, cpu, plain_cpu, " ms", "(reference: the gateway without them)", "{:.2f}"))
    name = "accepted per second with rspamd and clamd (8 smtplib sessions)"
    results.append(row(name, rate, plain_rate, "/s", "(reference: the gateway without them)", "{:.0f}"))


def _children_named(names: tuple[str, ...]) -> list[int]:
    """This process's children running one of ``names`` (the engines the trust helpers started)."""
    found = []
    for pid in tree(os.getpid())[1:]:
        try:
            command = Path(f"/proc/{pid}/comm").read_text().strip()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if command in names and int(stat[stat.rindex(")") + 2 :].split()[1]) == os.getpid():
            found.append(pid)
    return found


def floor_delivery_cpu(servers: Servers, mails: list[bytes], files: list[tuple[str, bytes]]) -> float:
    """CPU seconds of a plain aiobotocore client making each mail's calls (requests built by ``parse``)."""
    requests = []
    for raw in mails:
        path = servers.directory / "floor.eml"
        path.write_bytes(raw)
        made = subprocess.run(
            [sys.executable, "-m", "gateway", "parse", str(path), "--rcpt", RCPT],
            capture_output=True, check=True, cwd=ROOT,
        ).stdout  # fmt: skip
        [request] = json.loads(made)
        request.pop("Attachments", None)
        requests.append(request)
        if len(requests) >= 20:  # the same shape: the first 20 are parsed, the rest repeat them
            break
    requests = [requests[n % len(requests)] for n in range(len(mails))]
    job = json.dumps({"requests": requests, "files": [[name, body.hex()] for name, body in files]})
    answer = subprocess.run(
        [sys.executable, "-c", FLOOR_CLIENT, f"http://127.0.0.1:{servers.s3}", f"http://127.0.0.1:{servers.emulator}"],
        input=job.encode(), capture_output=True, check=True, env=ENVIRONMENT,
    ).stdout  # fmt: skip
    return float(answer.split()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000, help="sessions at once")
    parser.add_argument("--messages", type=int, default=2000, help="mails per accept-rate run")
    parser.add_argument("--cpu-mails", type=int, default=200, help="mails per CPU run")
    parser.add_argument(
        "--only", nargs="*", default=["memory", "lines", "sessions", "accept", "cpu", "filters"]
    )
    args = parser.parse_args()
    loops = ["asyncio"] + (["uvloop"] if _has_uvloop() else [])
    results: list[dict[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="gateway-frontdoor-") as temporary:
        servers = Servers(Path(temporary))
        try:
            if "memory" in args.only:
                memory_of_a_large_mail(servers, results)
            if "lines" in args.only:
                memory_of_short_lines(servers, results)
            if "sessions" in args.only:
                thousand_sessions(servers, results, args.sessions)
            if "accept" in args.only:
                accept_rate(servers, results, args.messages, loops)
            if "cpu" in args.only:
                for loop in loops:
                    cpu_per_mail(servers, results, args.cpu_mails, loop)
            if "filters" in args.only and shutil.which("rspamd") and shutil.which("clamd"):
                filters_cost(servers, results, args.cpu_mails)
        finally:
            servers.close()
    print(f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print("| figure | gateway | reference, same run | ratio | goal |\n|---|---|---|---|---|")
    for line in results:
        print("| " + " | ".join(line.values()) + " |")
    print(json.dumps(results))
    return 0


def _has_uvloop() -> bool:
    import importlib.util

    return importlib.util.find_spec("uvloop") is not None


if __name__ == "__main__":
    sys.exit(main())
