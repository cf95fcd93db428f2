"""moto's S3, SQS, DynamoDB and CloudFormation behind one endpoint, safe for many gateways at once.

moto's SQS and DynamoDB backends are not thread-safe: under concurrent requests its SQS delivers a message
twice or loses one, and a DynamoDB conditional write stops being atomic. So every request here reaches
moto alone, under one lock. A ReceiveMessage that would wait (long polling) waits outside the lock, asking
again whenever a message was sent or made visible (and every :data:`POLL_SECONDS`, for visibility
timeouts running out), so that one waiting gateway never stalls the others.

``python -m gateway.sandbox.aws [--port N]`` serves it (the tests start it once per session) and prints
``AWS http://127.0.0.1:N``. moto is an optional dependency (the ``sandbox`` extra): production never
imports this module.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from gateway.sandbox.s3server import MotoServer

__all__ = ["EmbeddedAWS"]

POLL_SECONDS = 0.5
MAX_WAIT_SECONDS = 20
_WAKERS = {
    "AmazonSQS.SendMessage",
    "AmazonSQS.SendMessageBatch",
    "AmazonSQS.ChangeMessageVisibility",
    "AmazonSQS.ChangeMessageVisibilityBatch",
}

Response = tuple[str, list[tuple[str, str]], bytes]


class _Serialized:
    """The WSGI application: one request at a time into moto; long polls wait outside."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._sent = threading.Condition()
        self.requests = 0

    def _call(self, environ: dict[str, Any], body: bytes) -> Response:
        captured: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        environ = {**environ, "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body))}
        with self._lock:
            self.requests += 1
            answer = b"".join(self._app(environ, start_response))
        return captured["status"], captured["headers"], answer

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        if target == "AmazonSQS.ReceiveMessage":
            status, headers, answer = self._receive(environ, body)
        else:
            status, headers, answer = self._call(environ, body)
            if target in _WAKERS:
                with self._sent:
                    self._sent.notify_all()
        start_response(status, headers)
        return [answer]

    def _receive(self, environ: dict[str, Any], body: bytes) -> Response:
        request = json.loads(body or b"{}")
        wait = int(request.get("WaitTimeSeconds", 0) or 0)
        if not 0 < wait <= MAX_WAIT_SECONDS:  # moto answers (or refuses) it as it is
            return self._call(environ, body)
        polled = json.dumps({**request, "WaitTimeSeconds": 0}).encode()
        deadline = time.monotonic() + wait
        while True:
            status, headers, answer = self._call(environ, polled)
            left = deadline - time.monotonic()
            if not status.startswith("200") or json.loads(answer).get("Messages") or left <= 0:
                return status, headers, answer
            with self._sent:
                self._sent.wait(min(POLL_SECONDS, left))


class EmbeddedAWS(MotoServer):
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port, _Serialized, "embedded-aws", "AWS")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.sandbox.aws")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    server = EmbeddedAWS(args.host, args.port).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"AWS {server.url}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
