"""`IngestHandler`: the aiohttp handlers of `POST /v1/events` and
`POST /v1/traces` (OTLP/HTTP).

A request passes, in order: the ingest key (401), the key's rate limit (429),
the query parameters (400), the body size before and after gzip (413), the
event count (413); then every item is validated on its own and the request
is answered 202 (OTLP: 200) with what was accepted and why the rest was not.
With `ack` "ledger" (`?ack=ledger`, or the default on the embedded broker) the
202 waits until the accepted events are ledger rows and the refused items
dead-letter rows; with "broker" it comes once the broker holds them.
Valid events and dead letters leave through one `publish` callable that the
application provides (to the usage topic and to the DLQ), so an HTTP
rejection becomes a dead letter exactly like a Kafka one.

Refusals that happen before the body is parsed (401, 429, 413, 415, bad query
parameters) are not dead-lettered: nothing was accepted for processing, and
the producer is told to retry, split or fix its configuration. A body that is
not JSON at all is answered 400 and dead-lettered (the Kafka path
dead-letters such messages too).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from aiohttp import web

from schemas.normalizers import FORMATS
from streams.auth import bearer_token
from streams.http_ingest.body import BODY_READ_SECONDS, BodyError, read_body
from streams.http_ingest.items import split_items
from streams.http_ingest.keys import IngestKeyStore, KeyScope
from streams.http_ingest.otlp import (
    OtlpFormatError,
    decode_protobuf,
    model_call_spans,
    protobuf_response,
)
from streams.http_ingest.rate_limit import RateLimiter
from streams.http_ingest.validation import Outcome, validate_items
from streams.ingest.decoding import Rejection, truncate_payload

log = logging.getLogger("spendstream.http_ingest")

EVENTS_PATH = "/v1/events"
TRACES_PATH = "/v1/traces"
DEFAULT_MAX_BODY_BYTES = 5 * 1024 * 1024
DEFAULT_MAX_EVENTS_PER_REQUEST = 10_000
DEFAULT_RATE_LIMIT_PER_KEY = (20.0, 40)
# An answer listing 10,000 errors would be larger than most requests.
MAX_ERRORS_LISTED = 1000
# Bodies above this are parsed and validated off the event loop, which is the
# Faust worker's: a 10,000-event body takes a few hundred milliseconds.
OFFLOAD_BYTES = 256 * 1024
PUBLISH_RETRY_AFTER_S = 1

# Fields a request may set on all its items through query parameters.
QUERY_FIELDS = frozenset(
    {
        "tenant_id",
        "team_id",
        "user_id",
        "feature_name",
        "workflow_id",
        "workflow_run_id",
        "workflow_name",
        "prompt_template_version",
        "environment",
        "api_key_id",
        "provider",
        "model",
    }
)
JSON_TYPES = frozenset({"application/json"})
PROTOBUF_TYPES = frozenset({"application/x-protobuf", "application/protobuf"})

Publish = Callable[[list[dict[str, Any]], list[dict[str, Any]]], Awaitable[Any]]
"""`publish(events, dead_letters)`: see `IngestHandler`."""
WaitLedgered = Callable[[Sequence[tuple[int, int]], float], Awaitable[bool]]
"""`wait_ledgered(positions, seconds)`: see `IngestHandler`."""
# `?ack=ledger`: how long a request waits for its events to be ledgered before 504.
DURABLE_ACK_SECONDS = 30.0
ACKS = ("broker", "ledger")
Ack = Literal["broker", "ledger"]


class Refusal(Exception):
    """A request refused as a whole, before any item was processed."""

    def __init__(
        self, status: int, reason: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.headers = headers or {}


class IngestHandler:
    """HTTP ingest for the worker's web server: its views call `handle_events` and
    `handle_traces`.

    `publish(events, dead_letters)` is awaited once per request that has
    anything to deliver. `events` are validated canonical events as
    JSON-ready dicts (`UsageEvent.model_dump(mode="json",
    exclude_defaults=True)`), for the usage topic. `dead_letters` are dicts
    with `reason`, `message`, `raw_payload` (truncated to 64 KiB),
    `element_index`, `request_id`, `tenant_id`, `source` (the route),
    `ingest_key_id`, `payload_bytes` and `received_at` (ISO 8601), for the
    DLQ. If it raises, the request is answered 503 with `Retry-After` and the
    producer sends it again; events published before the failure are then
    duplicates, which the pipeline drops by `request_id`.

    `key_store`: None accepts anonymous requests (ownership then comes from
    the events or the query parameters); a store requires
    `Authorization: Bearer <key>` on every request. `rate_limit_per_key`:
    (requests per second, burst) per key, or None for no limit.

    `wait_ledgered(positions, seconds)` is True once the usage messages at
    `positions` are ledgered; without it only broker acknowledgement exists.
    `default_ack` is the acknowledgement of a request that names no `?ack=`.
    """

    def __init__(
        self,
        publish: Publish,
        key_store: IngestKeyStore | None = None,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_events_per_request: int = DEFAULT_MAX_EVENTS_PER_REQUEST,
        rate_limit_per_key: tuple[float, int] | None = DEFAULT_RATE_LIMIT_PER_KEY,
        body_read_seconds: float = BODY_READ_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        wait_ledgered: WaitLedgered | None = None,
        durable_ack_seconds: float = DURABLE_ACK_SECONDS,
        default_ack: Ack = "broker",
    ) -> None:
        if max_body_bytes < 1 or max_events_per_request < 1:
            raise ValueError("max_body_bytes and max_events_per_request must be at least 1")
        if default_ack == "ledger" and wait_ledgered is None:
            raise ValueError("default_ack='ledger' needs wait_ledgered")
        self.default_ack = default_ack
        self.publish = publish
        self.wait_ledgered = wait_ledgered
        self.durable_ack_seconds = durable_ack_seconds
        self.key_store = key_store
        self.max_body_bytes = max_body_bytes
        self.max_events_per_request = max_events_per_request
        self.body_read_seconds = body_read_seconds
        self.rate_limit_per_key = rate_limit_per_key
        self._limiter = (
            RateLimiter(*rate_limit_per_key, clock=clock) if rate_limit_per_key else None
        )
        # Set when the worker begins a clean stop (streams/runtime/drain.py): what the
        # broker holds is being ledgered, and nothing more is taken in.
        self.stopping = False
        # Requests admitted and not yet answered: a stop waits for them, so that what
        # they publish is in the log the drain reads to its end.
        self.in_flight = 0

    # -- POST /v1/events ---------------------------------------------------

    async def handle_events(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        try:
            return await self._events(request)
        finally:
            self.in_flight -= 1

    async def _events(self, request: web.Request) -> web.Response:
        received_at = datetime.now(UTC)
        try:
            scope = self._admit(request)
            format, fields, asked = _query(request, allow_format=True)
            ack = asked or self.default_ack
            if ack == "ledger" and self.wait_ledgered is None:
                raise Refusal(400, "bad_parameter", "ack=ledger is not available on this server")
            body = await self._read(request)
        except Refusal as refusal:
            return _refused(refusal)
        content_type = request.content_type

        def prepare() -> Rejection | Outcome:
            items = split_items(body, content_type)
            if isinstance(items, Rejection):
                return items
            self._check_count(len(items))
            return validate_items(items, now=received_at, format=format, fields=fields, scope=scope)

        try:
            prepared = await _run(prepare, offload=len(body) > OFFLOAD_BYTES)
        except Refusal as refusal:
            return _refused(refusal)

        if isinstance(prepared, Rejection):
            letter = _dead_letter(prepared, EVENTS_PATH, scope, len(body), received_at)
            if await self._deliver([], [letter]) is None:
                return _unavailable({"error": "publish_failed", "message": _PUBLISH_FAILED})
            return _json(400, _answer(0, [prepared]))

        letters = [
            _dead_letter(r, EVENTS_PATH, scope, len(body), received_at) for r in prepared.rejections
        ]
        positions = await self._deliver(prepared.events, letters)
        if positions is None:
            return _unavailable({"error": "publish_failed", "message": _PUBLISH_FAILED})
        answer = {**_answer(len(prepared.events), prepared.rejections), "ack": ack}
        if ack == "broker":
            return _json(202, answer)
        # Dead letters of the request are written before `publish` returns; its events
        # are durable once the ingest consumer has ledgered their messages.
        assert self.wait_ledgered is not None
        if not await self.wait_ledgered(positions, self.durable_ack_seconds):
            return _json(
                504,
                {
                    "error": "not_yet_ledgered",
                    "message": f"the events were published but not ledgered within "
                    f"{self.durable_ack_seconds:g} s; sending the request again is safe "
                    "(events already ledgered are dropped as duplicates by request_id)",
                },
            )
        return _json(202, answer)

    # -- POST /v1/traces (OTLP/HTTP) ----------------------------------------

    async def handle_traces(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        try:
            return await self._traces(request)
        finally:
            self.in_flight -= 1

    async def _traces(self, request: web.Request) -> web.Response:
        received_at = datetime.now(UTC)
        protobuf = request.content_type in PROTOBUF_TYPES
        try:
            scope = self._admit(request)
            if not protobuf and request.content_type not in JSON_TYPES:
                raise Refusal(
                    415,
                    "unsupported_media_type",
                    f"Content-Type {request.content_type!r} is not OTLP; "
                    "send application/json or application/x-protobuf",
                )
            _, fields, _ = _query(request, allow_format=False)
            body = await self._read(request)
        except Refusal as refusal:
            return _status(refusal.status, refusal.message, refusal.headers, protobuf=protobuf)

        try:
            document = decode_protobuf(body) if protobuf else orjson.loads(body or b"{}")
            exported = model_call_spans(document)
            self._check_count(exported.total)
        except Refusal as refusal:
            return _status(refusal.status, refusal.message, refusal.headers, protobuf=protobuf)
        except (orjson.JSONDecodeError, OtlpFormatError) as exc:
            malformed = isinstance(exc, orjson.JSONDecodeError)
            rejection = Rejection(
                "malformed_json" if malformed else "not_an_object",
                f"not an OTLP export request: {exc}",
                truncate_payload(body),
            )
            letter = _dead_letter(rejection, TRACES_PATH, scope, len(body), received_at)
            if await self._deliver([], [letter]) is None:
                return _status(503, _PUBLISH_FAILED, _retry_after(), protobuf=protobuf)
            return _status(400, rejection.message, protobuf=protobuf)

        outcome = await _run(
            lambda: validate_items(
                exported.model_calls,
                now=received_at,
                format="otel_genai",
                fields=fields,
                scope=scope,
            ),
            offload=len(body) > OFFLOAD_BYTES,
        )
        letters = [
            _dead_letter(r, TRACES_PATH, scope, len(body), received_at) for r in outcome.rejections
        ]
        if await self._deliver(outcome.events, letters) is None:
            return _status(503, _PUBLISH_FAILED, _retry_after(), protobuf=protobuf)
        rejected = len(outcome.rejections)
        message = _summary(outcome.rejections)
        if protobuf:
            return web.Response(
                status=200,
                body=protobuf_response(rejected, message),
                content_type="application/x-protobuf",
            )
        answer: dict[str, Any] = {}
        if rejected:
            # int64 in the protobuf JSON mapping is a decimal string.
            answer["partialSuccess"] = {"rejectedSpans": str(rejected), "errorMessage": message}
        return _json(200, answer)

    # -- shared steps ------------------------------------------------------

    def _admit(self, request: web.Request) -> KeyScope | None:
        """The caller's key scope; raises `Refusal` for 401, 429 and 503 (stopping)."""
        if self.stopping:
            raise Refusal(
                503,
                "stopping",
                "this worker is stopping and takes no more events; send them again shortly "
                "(to another worker, or to this one once restarted)",
                _retry_after(),
            )
        if self.key_store is None:
            return None
        scope = self.key_store.authenticate(bearer_token(request))
        if scope is None:
            raise Refusal(
                401,
                "unauthorized",
                "a valid ingest key is required: Authorization: Bearer ssk_...",
                {"WWW-Authenticate": 'Bearer realm="spendstream"'},
            )
        if self._limiter is not None:
            wait = self._limiter.acquire(scope.key_id)
            if wait > 0:
                raise Refusal(
                    429,
                    "rate_limited",
                    f"ingest key {scope.key_id} is over its rate limit; retry later",
                    {"Retry-After": str(max(1, math.ceil(wait)))},
                )
        return scope

    async def _read(self, request: web.Request) -> bytes:
        try:
            return await read_body(request, self.max_body_bytes, self.body_read_seconds)
        except BodyError as exc:
            reasons = {413: "payload_too_large", 408: "request_timeout"}
            reason = reasons.get(exc.status, "bad_encoding")
            raise Refusal(exc.status, reason, str(exc)) from None

    def _check_count(self, count: int) -> None:
        if count > self.max_events_per_request:
            raise Refusal(
                413,
                "too_many_events",
                f"request holds {count} items; the limit is {self.max_events_per_request}",
            )

    async def _deliver(
        self, events: list[dict[str, Any]], dead_letters: list[dict[str, Any]]
    ) -> list[tuple[int, int]] | None:
        """The usage messages' positions once published (None if publishing failed)."""
        if not events and not dead_letters:
            return []
        try:
            positions = await self.publish(events, dead_letters)
        except Exception as exc:
            log.warning(
                "HTTP ingest could not publish %d events and %d dead letters: %r",
                len(events),
                len(dead_letters),
                exc,
            )
            return None
        return list(positions or [])


_PUBLISH_FAILED = "the events could not be published; retry the request"


async def _run(work: Callable[[], Any], *, offload: bool) -> Any:
    return await asyncio.to_thread(work) if offload else work()


def _query(
    request: web.Request, *, allow_format: bool
) -> tuple[str | None, dict[str, str], Ack | None]:
    """The request's format, its query fields and the `ack` it asks for (None: none)."""
    format: str | None = None
    fields: dict[str, str] = {}
    ack: Ack | None = None
    for name, value in request.query.items():
        if name == "ack" and allow_format:
            if value not in ACKS:
                raise Refusal(
                    400, "bad_parameter", f"unknown ack {value!r}; expected one of: broker, ledger"
                )
            ack = "ledger" if value == "ledger" else "broker"
        elif name == "format" and allow_format:
            if value not in FORMATS:
                raise Refusal(
                    400,
                    "bad_parameter",
                    f"unknown format {value!r}; expected one of: {', '.join(FORMATS)}",
                )
            format = value
        elif name in QUERY_FIELDS:
            if value.strip():
                fields[name] = value.strip()
        else:
            known = sorted(QUERY_FIELDS | ({"format", "ack"} if allow_format else set()))
            raise Refusal(
                400,
                "bad_parameter",
                f"unknown query parameter {name!r}; known: {', '.join(known)}",
            )
    return format, fields, ack


def _dead_letter(
    rejection: Rejection,
    source: str,
    scope: KeyScope | None,
    payload_bytes: int,
    received_at: datetime,
) -> dict[str, Any]:
    return {
        "reason": rejection.reason,
        "message": rejection.message,
        "raw_payload": rejection.raw_payload,
        "element_index": rejection.element_index,
        "request_id": rejection.request_id,
        "tenant_id": scope.tenant_id if scope else rejection.tenant_id,
        "source": source,
        "ingest_key_id": scope.key_id if scope else "",
        "payload_bytes": payload_bytes,
        "received_at": received_at.isoformat(),
    }


def _answer(accepted: int, rejections: Sequence[Rejection]) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "accepted": accepted,
        "rejected": len(rejections),
        "errors": [
            {"index": r.element_index, "reason": r.reason, "message": r.message}
            for r in rejections[:MAX_ERRORS_LISTED]
        ],
    }
    if len(rejections) > MAX_ERRORS_LISTED:
        answer["errors_truncated"] = True
    return answer


def _summary(rejections: Sequence[Rejection]) -> str:
    if not rejections:
        return ""
    first = rejections[0]
    more = f" (and {len(rejections) - 1} more)" if len(rejections) > 1 else ""
    return f"{first.reason}: {first.message}{more}"


def _retry_after() -> dict[str, str]:
    return {"Retry-After": str(PUBLISH_RETRY_AFTER_S)}


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type="application/json",
        headers=headers,
    )


def _refused(refusal: Refusal) -> web.Response:
    body = {"error": refusal.reason, "message": refusal.message}
    return _json(refusal.status, body, refusal.headers)


def _unavailable(body: Any) -> web.Response:
    return _json(503, body, _retry_after())


# google.rpc.Code values for the OTLP error answer (a google.rpc.Status).
_RPC_CODES = {400: 3, 401: 16, 413: 3, 415: 3, 429: 8, 503: 14}


def _status(
    status: int, message: str, headers: dict[str, str] | None = None, *, protobuf: bool
) -> web.Response:
    if protobuf:
        # A protobuf google.rpc.Status needs googleapis-common-protos, which
        # this server does not require; OTLP exporters only log the body.
        return web.Response(status=status, text=message, headers=headers)
    body = {"code": _RPC_CODES.get(status, 2), "message": message}
    return _json(status, body, headers)
