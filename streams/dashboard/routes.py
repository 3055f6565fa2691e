"""The dashboard's pages and JSON endpoints on the worker's web server.

`register_dashboard(app, read, status, config, token)` is the whole hook: `read`
runs a blocking function of the ClickHouse reader off the event loop (the worker's
read path, as POST /v1/query uses it), `status` returns the worker's own counters.
Every endpoint is a GET that answers JSON (docs/dashboard.md), or the chart's SVG.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Any, TypeVar, cast

import faust
import orjson
from pydantic import SecretStr

from detectors.spike_cause import SpikeCauseClassifier
from schemas.spend_config import SpendConfig
from streams.dashboard import panels
from streams.dashboard.access import authorized
from streams.dashboard.sources import Ledger
from streams.dashboard.svg import stacked_area

log = logging.getLogger(__name__)
T = TypeVar("T")
Read = Callable[[Callable[[Any], T]], Awaitable[T]]
ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/dashboard/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}
RATE_SECONDS = 10.0


class LedgerUnavailable(Exception):
    """ClickHouse is not connected (yet)."""


class BadRequest(ValueError):
    pass


@dataclass
class RateMeter:
    """Events per second from a growing counter, over the last RATE_SECONDS of samples."""

    samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=64))

    def rate(self, count: int, now: float) -> float | None:
        self.samples.append((now, count))
        while len(self.samples) > 2 and now - self.samples[1][0] >= RATE_SECONDS:
            self.samples.popleft()
        first_at, first = self.samples[0]
        return (count - first) / (now - first_at) if now > first_at else None


def _choice(request: Any, name: str, allowed: tuple[str, ...], default: str) -> str:
    value = request.query.get(name, default)
    if value not in allowed:
        raise BadRequest(f"{name} must be one of {', '.join(allowed)}")
    return cast(str, value)


def register_dashboard(
    app: faust.App,
    read: Read[Any],
    status: Callable[[], Mapping[str, Any]],
    config: SpendConfig,
    token: SecretStr | None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    static = resources.files("streams.dashboard").joinpath("static")
    classifier = SpikeCauseClassifier(
        **config.detectors.spike_cause.model_dump(exclude={"rate_floor"})
    )
    meter = RateMeter()
    ledgers: dict[int, Ledger] = {}

    async def on_ledger(panel: Callable[[Ledger], T]) -> T:
        def run(client: Any) -> T:
            # One Ledger (and its remembered day checks) per reader client.
            ledger = ledgers.get(id(client))
            if ledger is None or ledger.client is not client:
                ledgers.clear()
                ledger = ledgers[id(client)] = Ledger(client)
            return panel(ledger)

        return cast(T, await read(run))

    for path, (name, content_type) in ASSETS.items():
        body = static.joinpath(name).read_bytes()

        async def serve(
            web: Any, request: Any, body: bytes = body, content_type: str = content_type
        ) -> Any:
            # Faust's bytes() refuses a charset in content_type; aiohttp takes the header.
            return web.bytes(body, headers={"Content-Type": content_type})

        app.page(path, name=f"dashboard:{name}")(serve)

    def endpoint(path: str, answer: Callable[[Any], Awaitable[tuple[bytes, str]]]) -> None:
        async def view(web: Any, request: Any) -> Any:
            if not authorized(request, token):
                return web.json({"error": "analyst token required"}, status=401)
            try:
                body, content_type = await answer(request)
            except BadRequest as exc:
                return web.json({"error": str(exc)}, status=400)
            except LedgerUnavailable:
                return web.json({"error": "ClickHouse is not connected"}, status=503)
            return web.bytes(body, content_type=content_type)

        app.page(path, name=f"dashboard:{path}")(view)

    async def session(web: Any, request: Any) -> Any:
        # Answered without the token: the page asks here whether to show its login form
        # (a refused data request would log an error in the browser's console).
        return web.json(
            {"token_required": token is not None, "authorized": authorized(request, token)}
        )

    app.page("/v1/dashboard/session", name="dashboard:session")(session)

    def as_json(value: Any) -> tuple[bytes, str]:
        return orjson.dumps(value, default=str), "application/json"

    async def now(request: Any) -> tuple[bytes, str]:
        worker = dict(status())
        spend = await on_ledger(lambda ledger: panels.now_spend(ledger, clock()))
        lag = worker.pop("lag", {}) or {}
        return as_json(
            {
                **spend,
                "events_per_second": meter.rate(worker.get("events", 0), time.monotonic()),
                "worker": worker,
                "lag": sum(lag.values()),
                "lag_by_partition": {f"{topic}:{part}": n for (topic, part), n in lag.items()},
            }
        )

    async def who(request: Any) -> tuple[bytes, str]:
        by = _choice(request, "by", panels.DIMENSIONS, "tenant")
        period = _choice(request, "period", panels.PERIODS, "day")
        tenant = request.query.get("tenant") or None
        return as_json(
            await on_ledger(
                lambda ledger: panels.who(ledger, by, period, clock(), tenant)  # type: ignore[arg-type]
            )
        )

    async def budgets(request: Any) -> tuple[bytes, str]:
        return as_json(
            await on_ledger(lambda ledger: panels.budgets(ledger, config.tenants, clock()))
        )

    async def alerts(request: Any) -> tuple[bytes, str]:
        return as_json(await on_ledger(lambda ledger: panels.alerts(ledger, clock())))

    async def movers(request: Any) -> tuple[bytes, str]:
        period = _choice(request, "period", panels.PERIODS, "week")
        return as_json(
            await on_ledger(
                lambda ledger: panels.movers(ledger, classifier, period, clock())  # type: ignore[arg-type]
            )
        )

    def series_of(request: Any) -> Callable[[Ledger], dict[str, Any]]:
        by = _choice(request, "by", panels.DIMENSIONS, "tenant")
        period = _choice(request, "period", panels.PERIODS, "day")
        return lambda ledger: panels.series(ledger, by, period, clock())  # type: ignore[arg-type]

    async def series(request: Any) -> tuple[bytes, str]:
        return as_json(await on_ledger(series_of(request)))

    async def chart(request: Any) -> tuple[bytes, str]:
        data = await on_ledger(series_of(request))
        return stacked_area(data).encode(), "image/svg+xml"

    async def dead_letters(request: Any) -> tuple[bytes, str]:
        return as_json(await on_ledger(panels.dead_letters))

    endpoint("/v1/dashboard/now", now)
    endpoint("/v1/dashboard/who", who)
    endpoint("/v1/dashboard/budgets", budgets)
    endpoint("/v1/dashboard/alerts", alerts)
    endpoint("/v1/dashboard/movers", movers)
    endpoint("/v1/dashboard/series", series)
    endpoint("/v1/dashboard/series.svg", chart)
    endpoint("/v1/dashboard/dead_letters", dead_letters)
