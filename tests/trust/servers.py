"""The real servers the trust tests speak to, each started from a configuration the test writes.

* :class:`TestDns`: an authoritative DNS server on 127.0.0.1, UDP and TCP on one port, answering from a
  table (dnslib packs the answers). It runs in threads, so it keeps answering while a synchronous library
  blocks the test's event loop by mistake. A name can be made to time out or to SERVFAIL.
* :func:`rspamd`: Debian's rspamd with its own config (nothing from /etc/rspamd), a tiny TLD list (the
  stock one costs 24-40 s of start-up), no RBL, fuzzy or maps from the internet, its DNS pointed at the test
  server, and a Lua prefilter that forces any action from an ``X-Test-Action`` header.
* :func:`clamd`: Debian's clamd with a database of two signatures: a hash of the EICAR test file, and a
  harmless marker found anywhere (no signature download: it is not reachable, and not needed).
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dnslib import QTYPE, RCODE, RR, DNSRecord

from ..helpers import free_port

__all__ = ["EICAR", "MARKER", "Clamd", "Rspamd", "TestDns", "clamd", "rspamd"]

# The EICAR test file, assembled here so that no file of the repository carries it (scanners on developer
# machines and git hosts would flag the repository itself).
EICAR = (r"X5O!P%@AP[4\PZX54(P^)7CC)7}$" + "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*").encode()
EICAR_MD5 = "44d88612fea8a8f36de82e1278abb02f"
EICAR_SIGNATURE = "Test.EICAR-Custom"
# A body signature (.ndb: found anywhere in what is scanned, after MIME decoding): malware in a mail's text
MARKER = b"GATEWAY-TEST-MALWARE-MARKER-7f3a"
MARKER_SIGNATURE = "Test.Gateway.Marker"


def _name(name: str) -> str:
    return name.rstrip(".").lower() + "."


class TestDns:
    """``add(name, type, zone-format value)``; ``timeout(name)``; ``servfail(name)``; ``queries``."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self) -> None:
        self.port = 0
        self.records: dict[str, list[tuple[str, str]]] = {}
        self.dropped: set[str] = set()
        self.failing: set[str] = set()
        self.queries: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []

    def add(self, name: str, kind: str, value: str) -> None:
        kind = kind.upper()
        if kind == "TXT":  # one record of <=255-byte strings: a 2048-bit DKIM key needs two
            raw = value.encode()
            chunks = [raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""]
            value = " ".join('"' + c.decode().replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)
        with self._lock:
            self.records.setdefault(_name(name), []).append((kind, value))

    def timeout(self, name: str) -> None:
        self.dropped.add(_name(name))

    def servfail(self, name: str) -> None:
        self.failing.add(_name(name))

    def _answer(self, data: bytes, transport: str) -> bytes | None:
        try:
            request = DNSRecord.parse(data)
        except Exception:
            return None
        reply = request.reply()
        name = _name(str(request.q.qname))
        kind = QTYPE.get(request.q.qtype, str(request.q.qtype))
        self.queries.append((name.rstrip("."), kind, transport))
        if name in self.dropped:
            return None
        if name in self.failing:
            reply.header.rcode = RCODE.SERVFAIL
            return bytes(reply.pack())
        with self._lock:
            records = self.records.get(name)
            if records is None:
                reply.header.rcode = RCODE.NXDOMAIN
            else:
                for record_kind, value in records:
                    if record_kind in (kind, "CNAME"):
                        reply.add_answer(*RR.fromZone(f"{name} 60 IN {record_kind} {value}"))
        return bytes(reply.pack())

    def _serve_udp(self, sock: socket.socket) -> None:
        sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                data, peer = sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            answer = self._answer(data, "udp")
            if answer is None:
                continue
            if len(answer) > 512:  # no EDNS here: truncated, and the client asks again over TCP
                record = DNSRecord.parse(answer)
                record.rr = []
                record.header.tc = 1
                answer = bytes(record.pack())
            sock.sendto(answer, peer)

    def _serve_tcp_client(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                while True:
                    size = conn.recv(2)
                    if len(size) < 2:
                        return
                    (length,) = struct.unpack("!H", size)
                    data = b""
                    while len(data) < length:
                        part = conn.recv(length - len(data))
                        if not part:
                            return
                        data += part
                    answer = self._answer(data, "tcp")
                    if answer is not None:
                        conn.sendall(struct.pack("!H", len(answer)) + answer)
            except OSError:
                return

    def _serve_tcp(self, sock: socket.socket) -> None:
        sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve_tcp_client, args=(conn,), daemon=True).start()

    def start(self) -> int:
        for _ in range(50):  # one port free for both UDP and TCP
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind(("127.0.0.1", port))
            except OSError:
                udp.close()
                tcp.close()
                continue
            tcp.listen(64)
            break
        else:  # pragma: no cover
            raise RuntimeError("no port free for both UDP and TCP")
        self.port = port
        self._sockets = [udp, tcp]
        self._threads = [
            threading.Thread(target=self._serve_udp, args=(udp,), daemon=True, name="test-dns-udp"),
            threading.Thread(target=self._serve_tcp, args=(tcp,), daemon=True, name="test-dns-tcp"),
        ]
        for thread in self._threads:
            thread.start()
        return port

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(2)
        for sock in self._sockets:
            sock.close()


def _die_with_parent() -> None:
    """In the child: SIGTERM when the test process dies without cleaning up (no orphan holds a port)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


# Forces rspamd's action from a message header (a pre-result: rspamd then stops processing), or gives a
# score for the configured thresholds to judge. Test-only rules: they would let a sender choose its verdict.
TEST_RULES = r"""
require "global_functions" ()
local valid = {
  ['reject'] = true, ['soft reject'] = true, ['rewrite subject'] = true, ['add header'] = true,
  ['greylist'] = true, ['no action'] = true, ['discard'] = true, ['quarantine'] = true,
}
rspamd_config:register_symbol({
  name = 'TEST_FORCE_ACTION', type = 'prefilter', priority = 10,
  callback = function(task)
    local hdr = task:get_header('X-Test-Action')
    if not hdr then return end
    local action = hdr:lower():gsub('[_-]', ' '):gsub('^%s+', ''):gsub('%s+$', '')
    if not valid[action] then return end
    task:set_pre_result({action = action, message = 'forced by test: ' .. action, module = 'test_rules'})
  end,
})
rspamd_config:register_symbol({
  name = 'TEST_SCORE', score = 1.0, group = 'test',
  callback = function(task)
    local hdr = task:get_header('X-Test-Score')
    local v = hdr and tonumber(hdr)
    if v then task:insert_result('TEST_SCORE', v, hdr) end
  end,
})
"""


def _rspamd_config(directory: Path, port: int, dns_port: int) -> Path:
    for sub in ("db", "run", "hs"):
        (directory / sub).mkdir()
    (directory / "tld.dat").write_text("com\nnet\norg\ntest\nexample\ninvalid\nlocalhost\n")
    (directory / "test_rules.lua").write_text(TEST_RULES)
    config = directory / "rspamd.conf"
    config.write_text(
        f"""
options {{
  pidfile = "{directory}/run/rspamd.pid";
  dns {{ nameserver = ["127.0.0.1:{dns_port}"]; timeout = 1s; retransmits = 1; sockets = 4; }}
  url_tld = "{directory}/tld.dat";
  hs_cache_dir = "{directory}/hs";
  tempdir = "{directory}";
  local_addrs = [];
  filters = "";
  task_timeout = 8s;
}}
logging {{ type = "file"; filename = "{directory}/rspamd.log"; level = "warning"; }}
worker "normal" {{ bind_socket = "127.0.0.1:{port}"; count = 1; }}
actions {{ reject = 15; "rewrite subject" = 8; add_header = 6; greylist = 4; subject = "***SPAM*** %s"; }}
modules {{ path = "${{PLUGINSDIR}}"; }}
lua = "{directory}/test_rules.lua";
group "test" {{ symbols {{ "TEST_SCORE" {{ weight = 1.0; }} }} }}
"""
    )
    return config


def stop(process: subprocess.Popen[bytes]) -> None:
    """An engine the tests started: asked to stop, then killed after 10 s; its stderr pipe closed."""
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    assert process.stderr is not None
    process.stderr.close()


@dataclass(frozen=True)
class Rspamd:
    url: str
    started_in: float


@contextlib.contextmanager
def rspamd(dns_port: int, timeout: float = 60.0) -> Iterator[Rspamd]:
    with tempfile.TemporaryDirectory(prefix="rspamd-") as tmp:
        directory = Path(tmp)
        port = free_port()
        config = _rspamd_config(directory, port, dns_port)
        command = [
            "rspamd", "-f", "-c", str(config), "-u", "root", "-g", "root",
            "--var", f"DBDIR={directory}/db", "--var", f"RUNDIR={directory}/run",
            "--var", f"LOGDIR={directory}", "--var", f"LOCAL_CONFDIR={directory}",
        ]  # fmt: skip
        started = time.monotonic()
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_die_with_parent
        )
        try:
            while True:
                if process.poll() is not None:
                    log = directory / "rspamd.log"
                    raise RuntimeError(f"rspamd exited {process.returncode}: {log.read_text()[-2000:]}")
                with (
                    contextlib.suppress(OSError),
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1) as answer,
                ):
                    if answer.read().strip() == b"pong":
                        break
                if time.monotonic() - started > timeout:
                    raise TimeoutError("rspamd did not answer /ping")
                time.sleep(0.05)
            yield Rspamd(f"http://127.0.0.1:{port}", time.monotonic() - started)
        finally:
            stop(process)  # rspamd's main process stops its workers


@dataclass(frozen=True)
class Clamd:
    socket: Path
    port: int
    started_in: float


@contextlib.contextmanager
def clamd(timeout: float = 30.0) -> Iterator[Clamd]:
    with tempfile.TemporaryDirectory(prefix="clamd-") as tmp:
        directory = Path(tmp)
        (directory / "db").mkdir()
        # .hdb: MD5:size:name of a whole file; clamd reports it as "<name>.UNOFFICIAL"
        (directory / "db" / "test.hdb").write_text(f"{EICAR_MD5}:{len(EICAR)}:{EICAR_SIGNATURE}\n")
        (directory / "db" / "marker.ndb").write_text(f"{MARKER_SIGNATURE}:0:*:{MARKER.hex()}\n")
        port = free_port()
        config = directory / "clamd.conf"
        config.write_text(
            f"DatabaseDirectory {directory / 'db'}\nLocalSocket {directory / 'clamd.sock'}\n"
            f"LocalSocketMode 660\nTCPAddr 127.0.0.1\nTCPSocket {port}\nForeground yes\n"
            f"LogFile {directory / 'clamd.log'}\nTemporaryDirectory {directory}\nStreamMaxLength 25M\n"
            "SelfCheck 0\n"
        )
        started = time.monotonic()
        process = subprocess.Popen(
            ["clamd", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent,
        )
        try:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"clamd exited {process.returncode}")
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", port), timeout=0.2) as probe,
                ):
                    probe.sendall(b"zPING\0")
                    if probe.recv(16) == b"PONG\0":
                        break
                if time.monotonic() - started > timeout:
                    raise TimeoutError("clamd did not answer PING")
                time.sleep(0.02)
            yield Clamd(directory / "clamd.sock", port, time.monotonic() - started)
        finally:
            stop(process)
