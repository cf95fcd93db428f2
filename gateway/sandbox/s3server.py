"""An S3 server in a thread (moto's), for the sandbox, the emulator and the tests.

moto is an optional dependency (the ``sandbox`` extra): production never imports this module.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any, Self

import botocore.session

__all__ = ["SANDBOX_KEY", "EmbeddedS3", "MotoServer"]

SANDBOX_KEY = "sandbox"  # moto accepts any credentials; these are never real
_SLOW_DOWN = (
    b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code>"
    b"<Message>Please reduce your request rate (injected by the emulator).</Message></Error>"
)


class MotoServer:
    """moto's server in a thread of this process, quiet, on ``host:port`` (0: a free one); ``wrap`` puts
    something around moto's WSGI application (fault injection, a lock), ``what`` names it in errors."""

    def __init__(self, host: str, port: int, wrap: Callable[[Any], Any], name: str, what: str) -> None:
        try:
            from moto.moto_server.werkzeug_app import (
                DomainDispatcherApplication,
                MotoRequestHandler,
                create_backend_app,
            )
            from werkzeug.serving import make_server
        except ImportError as error:  # pragma: no cover - depends on the installation
            raise RuntimeError(
                f"the embedded {what} needs the sandbox extra: pip install 'connect-mail-gateway[sandbox]'"
            ) from error

        class QuietHandler(MotoRequestHandler):
            def log_request(self, *args: object) -> None:
                """No line per request on the terminal."""

        app = wrap(DomainDispatcherApplication(create_backend_app))
        self._server: Any = make_server(host, port, app, threaded=True, request_handler=QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name=name, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class EmbeddedS3(MotoServer):
    def __init__(self, host: str = "127.0.0.1", port: int = 0, region: str = "us-east-1") -> None:
        self.error_rate = 0.0  # share of requests answered 503 SlowDown, for fault injection
        self.region = region
        super().__init__(host, port, self._faulty, "embedded-s3", "S3")

    def _faulty(self, app: Any) -> Any:
        def serve(environ: dict[str, Any], start_response: Any) -> Any:
            if self.error_rate and random.random() < self.error_rate:  # noqa: S311 - not secrecy
                start_response("503 Slow Down", [("Content-Type", "application/xml")])
                return [_SLOW_DOWN]
            return app(environ, start_response)

        return serve

    def client(self) -> Any:
        """A plain (synchronous) botocore S3 client for this server."""
        return botocore.session.get_session().create_client(
            "s3",
            region_name=self.region,
            endpoint_url=self.url,
            aws_access_key_id=SANDBOX_KEY,
            aws_secret_access_key=SANDBOX_KEY,
        )

    def create_bucket(self, name: str) -> None:
        options: dict[str, Any] = {"Bucket": name}
        if self.region != "us-east-1":
            options["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        self.client().create_bucket(**options)
