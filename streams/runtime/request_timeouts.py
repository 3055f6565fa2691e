"""Header and body timeouts for the worker's web server (aiohttp, under Faust's web driver).

A client that opens a connection and sends half a request line, or half its headers,
or a body a byte at a time, holds a connection, a buffer and a handler for as long as
it likes unless the server cuts it off (a "slowloris" client). Neither Faust nor
aiohttp's AppRunner has a setting named for it; what bounds each phase in aiohttp 3.14
(read in `aiohttp/web_protocol.py`, checked against 3.14.5):

- **Request head.** `RequestHandler` arms its keep-alive timer when the connection is
  made and again when a response ends, and when it fires while the handler still waits
  for a complete request head, it closes the connection (`_process_keepalive`:
  "handler in idle state"). A partial head leaves the handler waiting, so
  `keepalive_timeout` bounds the time from the connection's start (or its previous
  response) to a complete head: the header timeout, passed as one of aiohttp's public
  `handler_args` through Faust's public `web_application_options`. It also closes an
  idle keep-alive connection after that long; clients open a new one.
- **Request body.** Nothing in aiohttp bounds it once the head is in. The middleware
  below starts a timer when a request reaches its handler; if the body is not all in
  when it fires, the body stream is given `RequestBodyTimeout` (aiohttp's public
  `StreamReader.set_exception`), which every pending or later read raises, and the
  request is answered 408 with the connection closed. The HTTP ingest handler reads
  its body with its own timeout of the same length and records a dead letter
  (`request_timeout`) for it; a `TimeoutError` either way.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from streams.settings import Settings


class RequestBodyTimeout(TimeoutError):
    """The request body did not arrive within the body timeout."""


def web_application_options(settings: Settings) -> dict[str, Any]:
    """aiohttp `Application` options for Faust's `web_application_options`."""
    return {
        "handler_args": {"keepalive_timeout": settings.http_header_timeout_seconds},
        "middlewares": [body_deadline(settings.http_body_timeout_seconds)],
    }


def body_deadline(seconds: float) -> Any:
    """A middleware: the request's body must be in within `seconds` of its head."""

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        body = request.content
        expired = f"the request body did not arrive within {seconds:g}s"

        def expire() -> None:
            if not body.is_eof():
                body.set_exception(RequestBodyTimeout(expired))

        timer = asyncio.get_running_loop().call_later(seconds, expire)
        try:
            return await handler(request)
        except RequestBodyTimeout:
            return web.json_response(
                {"error": expired}, status=408, headers={"Connection": "close"}
            )
        finally:
            timer.cancel()

    return middleware
