"""The worker's HTTP views, on Faust's web server (`register_views`).

- `GET /health`: 200 "ok", or 503 "degraded" while the ledger sink fails.
- `POST /v1/events`, `POST /v1/traces`: HTTP ingest (streams/http_ingest).
- `POST /v1/ledger/insert`, `POST /v1/ledger/command`: ledger inserts and statements
  from the peers of `dev --workers N` and from commands that write while it runs.
- `POST /v1/query` (analyst token), `POST /v1/ledger/query` (peer token): one guarded
  SELECT while this worker owns the embedded data dir.
- `POST /v1/whatif` (analyst token): `spendstream whatif` over HTTP, read-only.
- `GET /metrics`: Prometheus; `GET /stats`: the same counters as JSON.

`GET /v1/limits/{tenant_id}` belongs to the spend agent (streams/spend/agent.py); the
`/v1/alerts/...` acknowledgement and snooze views are streams/runtime/alert_views.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import faust
import orjson
from pydantic import ValidationError

from schemas.scenario import Scenario
from streams.analyst import whatif
from streams.analyst.periods import Period, date_range
from streams.auth import RequestAuth
from streams.errors import ConfigError
from streams.http_ingest import IngestHandler
from streams.http_ingest.body import BodyTooLarge, read_body
from streams.ledger.isolation import first_line, is_data_error
from streams.ledger.peer import decode_insert
from streams.ledger.remote import ARROW_STREAM, DirectReader, decode_query_request
from streams.runtime.metrics import CONTENT_TYPE, WorkerMetrics
from streams.runtime.resources import WorkerResources
from streams.runtime.status import WorkerStatus

# A peer's ledger batch (5000 messages of up to 100 events, ~600 bytes a row as JSON).
PEER_INSERT_MAX_BYTES = 512 * 1024 * 1024

PageView = Callable[[Any, Any], Awaitable[Any]]
# A what-if reads every ledger row of its period: a year at most per request.
WHATIF_MAX_DAYS = 366


async def refuse_peer(
    view: faust.web.View, request: Any, resources: WorkerResources, auth: RequestAuth
) -> Any:
    """The error answer to a peer write (insert or statement), or None to go on: the
    peer token is required, and this worker must own the data dir."""
    if not auth.is_peer(request):
        return view.error(401, "peer token required")
    await resources.connected()
    if not resources.owns_ledger:
        return view.error(503, "not the owner of the data dir")
    return None


def health_view(resources: WorkerResources) -> PageView:
    async def health(web: Any, request: Any) -> Any:
        sink = resources.sink
        body = {
            "status": "ok" if resources.healthy else "degraded",
            "ledger_rows_written": sink.stats.rows if sink else 0,
            "dead_letters_written": sink.stats.dead_letters if sink else 0,
            "sink_failures": sink.stats.failures if sink else 0,
            "sink_last_error": sink.stats.last_error if sink else "",
        }
        return web.json(body, status=200 if resources.healthy else 503)

    return health


def events_view(handler: IngestHandler) -> type[faust.web.View]:
    class EventsView(faust.web.View):
        async def post(self, request: Any) -> Any:
            return await handler.handle_events(request)

    return EventsView


def traces_view(handler: IngestHandler) -> type[faust.web.View]:
    class TracesView(faust.web.View):
        async def post(self, request: Any) -> Any:
            return await handler.handle_traces(request)

    return TracesView


def peer_insert_view(resources: WorkerResources, auth: RequestAuth) -> type[faust.web.View]:
    class PeerInsertView(faust.web.View):
        """Inserts from peer workers of `dev --workers N` and from commands that write
        while this worker owns the embedded data dir (`reprice`)."""

        async def post(self, request: Any) -> Any:
            if (refused := await refuse_peer(self, request, resources, auth)) is not None:
                return refused
            try:
                # A peer's batch outgrows aiohttp's 1 MiB default: read it with our bound.
                body = await read_body(request, PEER_INSERT_MAX_BYTES)
                table, batch, insert_settings = decode_insert(body)
            except BodyTooLarge as exc:
                return self.error(413, str(exc))
            except (ValueError, KeyError) as exc:
                return self.error(400, str(exc))
            try:
                await resources.insert_from_peer(table, batch, insert_settings)
            except Exception as exc:
                if not is_data_error(exc):
                    raise
                # The peer's sink isolates the rows at fault instead of retrying.
                return self.error(422, first_line(exc))
            return self.json({"inserted": batch.num_rows})

    return PeerInsertView


def peer_command_view(resources: WorkerResources, auth: RequestAuth) -> type[faust.web.View]:
    class PeerCommandView(faust.web.View):
        """A statement (DDL, ALTER, INSERT … VALUES) from a command that writes while this
        worker owns the embedded data dir (`migrate`, `retention --raw-days`), on the
        writer's session. The peer token is the data dir's key: whoever holds it could
        open the data dir itself with the stack stopped."""

        async def post(self, request: Any) -> Any:
            if (refused := await refuse_peer(self, request, resources, auth)) is not None:
                return refused
            try:
                sql, parameters = decode_query_request(await request.read(), ARROW_STREAM)
            except (ValueError, KeyError, TypeError) as exc:
                return self.error(400, f"bad command request: {exc}")
            try:
                await resources.command_from_peer(sql, parameters or None)
            except Exception as exc:
                return self.error(400, str(exc).strip().splitlines()[0][:500])
            return self.json({"done": True})

    return PeerCommandView


async def answer_query(view: faust.web.View, request: Any, resources: WorkerResources) -> Any:
    """One guarded SELECT on the reader session (streams/ledger/query_service.py)."""
    if not await resources.connected() or resources.queries is None:
        return view.error(503, "ClickHouse is not connected")
    answer = await resources.queries.answer(
        await request.read(),
        request.headers.get("Content-Type", ""),
        request.headers.get("Accept", ""),
    )
    return view.bytes(answer.body, content_type=answer.content_type, status=answer.status)


def query_view(resources: WorkerResources, auth: RequestAuth) -> type[faust.web.View]:
    class QueryView(faust.web.View):
        """Analyst SQL (one guarded SELECT) while this worker owns the embedded data dir."""

        async def post(self, request: Any) -> Any:
            if not auth.is_analyst(request):
                return self.error(401, "analyst token required: Authorization: Bearer <token>")
            return await answer_query(self, request, resources)

    return QueryView


def peer_query_view(resources: WorkerResources, auth: RequestAuth) -> type[faust.web.View]:
    class PeerQueryView(faust.web.View):
        """The reads of peer workers of `dev --workers N`, with the peer token."""

        async def post(self, request: Any) -> Any:
            if not auth.is_peer(request):
                return self.error(401, "peer token required")
            return await answer_query(self, request, resources)

    return PeerQueryView


def whatif_request(body: bytes) -> tuple[Period, Scenario]:
    """`{"from": "2026-11-01", "to": "2026-11-30", "scenario": {...}}`: the scenario
    file's fields (schemas/scenario.py) but `pricing`, a path the CLI reads on its own
    machine; over HTTP the worker prices with its own catalog."""
    request = orjson.loads(body)
    if not isinstance(request, dict):
        raise ValueError("expected a JSON object with from, to and scenario")
    period = date_range(str(request["from"]), str(request["to"]))
    if len(period.days) > WHATIF_MAX_DAYS:
        raise ValueError(f"from..to spans more than {WHATIF_MAX_DAYS} days")
    fields = request.get("scenario") or {}
    if not isinstance(fields, dict) or "pricing" in fields:
        raise ValueError("scenario: an object of its levers; pricing files are for the CLI")
    return period, Scenario.model_validate(fields)


def whatif_view(resources: WorkerResources, auth: RequestAuth) -> type[faust.web.View]:
    class WhatIfView(faust.web.View):
        """A period of the ledger re-priced under a scenario; the answer is the JSON of
        `spendstream whatif --format json`. Nothing is written."""

        async def post(self, request: Any) -> Any:
            if not auth.is_analyst(request):
                return self.error(401, "analyst token required: Authorization: Bearer <token>")
            try:
                period, scenario = whatif_request(await request.read())
            except (ValueError, KeyError, TypeError, ValidationError, ConfigError) as exc:
                reason = str(exc).strip().splitlines()
                return self.error(400, f"whatif: {reason[-1].strip() if reason else exc!r}")
            if not await resources.connected() or resources.queries is None:
                return self.error(503, "ClickHouse is not connected")
            report = await resources.queries.run(
                lambda client: whatif.what_if(
                    DirectReader(client), resources.catalog, scenario, period
                )
            )
            return self.json(whatif.as_json(report))

    return WhatIfView


def metrics_view(status: WorkerStatus, metrics: WorkerMetrics) -> PageView:
    async def metrics_page(web: Any, request: Any) -> Any:
        status.refresh_lag()
        return web.bytes(metrics.render(), content_type=CONTENT_TYPE)

    return metrics_page


def stats_view(status: WorkerStatus) -> PageView:
    async def stats(web: Any, request: Any) -> Any:
        return web.json({**status.stats(), "assigned": status.assigned()})

    return stats


def register_views(
    app: faust.App,
    auth: RequestAuth,
    resources: WorkerResources,
    ingest_handler: IngestHandler,
    status: WorkerStatus,
    metrics: WorkerMetrics,
) -> None:
    app.page("/health")(health_view(resources))
    app.page("/v1/events")(events_view(ingest_handler))
    app.page("/v1/traces")(traces_view(ingest_handler))
    app.page("/v1/ledger/insert")(peer_insert_view(resources, auth))
    app.page("/v1/ledger/command")(peer_command_view(resources, auth))
    app.page("/v1/query")(query_view(resources, auth))
    app.page("/v1/ledger/query")(peer_query_view(resources, auth))
    app.page("/v1/whatif")(whatif_view(resources, auth))
    app.page("/metrics")(metrics_view(status, metrics))
    app.page("/stats")(stats_view(status))
