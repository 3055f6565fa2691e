"""Real HTTP(S) receivers on 127.0.0.1 for the real slack-sdk and PagerDuty clients.

A `Receiver` is an aiohttp server. It answers from a script (status, headers, body)
and then with its default answer, and records every request it gets (arrival time,
path, headers, JSON body). Started with `await receiver.start()` in the test's own
event loop (notifiers in the test process run in threads), or through a
`ReceiverLoop` (a loop in a daemon thread) when the notifiers live in a worker child
process and the test thread only reads what was recorded.

PagerDuty receivers speak HTTPS with a self-signed certificate (`self_signed_tls`),
because `pagerduty.EventsApiV2Client` accepts only https:// base URLs.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from streams.ports import free_port

T = TypeVar("T")


@dataclass
class Received:
    at: float  # time.monotonic() on arrival
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None


def slack_webhook_ok(_: Received) -> Reply:
    return Reply(200, {"Content-Type": "text/plain"}, "ok")


def slack_api_ok(received: Received) -> Reply:
    channel = received.body.get("channel") if isinstance(received.body, dict) else None
    return Reply(200, {}, {"ok": True, "channel": channel, "ts": "1741082400.000100"})


def pagerduty_ok(received: Received) -> Reply:
    dedup_key = received.body.get("dedup_key") if isinstance(received.body, dict) else None
    return Reply(
        202, {}, {"status": "success", "message": "Event processed", "dedup_key": dedup_key}
    )


RECEIVER_KINDS = {"slack": slack_webhook_ok, "slack_api": slack_api_ok, "pagerduty": pagerduty_ok}


class Receiver:
    """An HTTP(S) server on 127.0.0.1 that records requests and answers from a script.

    The port is chosen at construction so that a configuration can name it before the
    receiver is started ("receiver down for a while, then up").
    """

    def __init__(
        self, default: Callable[[Received], Reply], ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.default = default
        self.ssl_context = ssl_context
        self.script: list[Reply] = []
        self._lock = threading.Lock()  # the server's loop may be another thread's
        self._requests: list[Received] = []
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[Received]:
        with self._lock:
            return list(self._requests)

    def reply(self, status: int, headers: dict[str, str] | None = None, body: Any = None) -> None:
        """Answer the next request with this (before the default answer resumes)."""
        with self._lock:
            self.script.append(Reply(status, headers or {}, body))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        received = Received(time.monotonic(), request.path, dict(request.headers), body)
        with self._lock:
            self._requests.append(received)
            reply = self.script.pop(0) if self.script else self.default(received)
        if isinstance(reply.body, dict | list):
            return web.json_response(reply.body, status=reply.status, headers=reply.headers)
        return web.Response(status=reply.status, headers=reply.headers, text=reply.body or "")

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, "127.0.0.1", self.port, ssl_context=self.ssl_context, reuse_address=True
        )
        await site.start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class ReceiverLoop:
    """One event loop in a daemon thread that serves receivers for a synchronous test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self, receiver: Receiver) -> Receiver:
        return self.run(receiver.start())

    def stop(self, receiver: Receiver) -> None:
        self.run(receiver.stop())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """(certificate, key) for 127.0.0.1, made with the openssl CLI."""
    if shutil.which("openssl") is None:
        raise RuntimeError("the PagerDuty receiver needs the openssl CLI for its certificate")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def self_signed_tls(directory: Path) -> ssl.SSLContext:
    """A server context with a self-signed certificate for 127.0.0.1."""
    return server_tls_context(*self_signed_certificate(directory))
