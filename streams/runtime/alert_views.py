"""The operator's word on alerts over HTTP (streams/alerting/acknowledgements.py).

- `POST /v1/alerts/{alert_id}/ack` (analyst token, or the alert's signed link token as
  `?token=`): the alert's shift is the new normal. Body (optional): `{"note": "..."}`
  or the confirmation page's form.
- `GET /v1/alerts/{alert_id}/ack?token=...`: the page the Slack link opens; it only
  asks to confirm (a link preview or a prefetch must not acknowledge anything).
- `POST /v1/alerts/snooze` (analyst token): `{"key": "tenant:acme", "for": "4h"}` or
  `{"alert_id": "...", "for": "4h"}`, with an optional `note`.
- `GET /v1/alerts/acks` (analyst token): the acknowledgements and snoozes in force.

Each is written to `alert_acknowledgements` before it takes effect: one the table
did not take is refused (503), never held in memory alone.
"""

from __future__ import annotations

import asyncio
import html
from datetime import UTC, datetime
from typing import Any

import faust
import orjson

from streams.alerting.acknowledgements import parse_duration, valid_link_token
from streams.auth import RequestAuth
from streams.runtime.resources import WorkerResources
from streams.spend.state import SpendState

# The incidents and acknowledgements of the last run are restored in the first seconds.
RESTORE_WAIT_SECONDS = 30.0
ANALYST_REQUIRED = "analyst token required: Authorization: Bearer <token>"
MAX_NOTE = 1000


async def request_fields(request: Any) -> dict[str, Any]:
    """A JSON object or a form's fields; {} for an empty body."""
    if request.content_type == "application/x-www-form-urlencoded":
        return dict(await request.post())
    body = await request.read()
    if not body.strip():
        return {}
    fields = orjson.loads(body)
    if not isinstance(fields, dict):
        raise ValueError("expected a JSON object")
    return fields


def confirmation_page(alert_id: str, token: str, summary: str) -> str:
    action = f"/v1/alerts/{html.escape(alert_id)}/ack?token={html.escape(token)}"
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<title>Acknowledge alert</title></head><body>"
        f"<h1>Acknowledge as new normal</h1><p>{html.escape(summary)}</p>"
        "<p>From now on this level of spend is this tenant's normal: the same shift will "
        "not page again; a further jump still will.</p>"
        f"<form method='post' action='{action}'>"
        "<label>Note <input name='note' size='60'></label> "
        "<button type='submit'>Acknowledge</button></form></body></html>"
    )


def alert_views(
    auth: RequestAuth, resources: WorkerResources, spend: SpendState
) -> tuple[type[faust.web.View], ...]:
    secret = auth.tokens.alert_link

    async def restored() -> bool:
        """Whether the last run's alerts and acknowledgements are in (waiting a little)."""
        try:
            await asyncio.wait_for(spend.state_ready.wait(), RESTORE_WAIT_SECONDS)
        except TimeoutError:
            return False
        return True

    def recovering(view: faust.web.View) -> Any:
        body = {"error": "the alerts of the last run are being restored; retry shortly"}
        return view.json(body, status=503, headers={"Retry-After": "1"})

    class AckView(faust.web.View):
        async def get(self, request: Any, alert_id: str) -> Any:
            if not valid_link_token(secret, alert_id, request.query.get("token")):
                return self.error(401, "this link's token does not match the alert")
            if not await restored():
                return recovering(self)
            alert = spend.incidents.find_alert(alert_id)
            if alert is None:
                return self.error(404, f"no paged alert {alert_id}")
            page = confirmation_page(alert_id, request.query["token"], alert.summary)
            return self.html(page)

        async def post(self, request: Any, alert_id: str) -> Any:
            by_link = valid_link_token(secret, alert_id, request.query.get("token"))
            if not (by_link or auth.is_analyst(request)):
                return self.error(401, ANALYST_REQUIRED)
            if not await restored():
                return recovering(self)
            try:
                fields = await request_fields(request)
            except ValueError as exc:
                return self.error(400, f"ack: {exc}")
            note = str(fields.get("note") or "")[:MAX_NOTE]
            acks = spend.acknowledgements_for(
                alert_id, "slack link" if by_link else "analyst", note, datetime.now(UTC)
            )
            if acks is None:
                return self.error(404, f"no paged alert {alert_id}")
            if (refused := await record(self, acks)) is not None:
                return refused
            if request.content_type == "application/x-www-form-urlencoded":
                return self.html(f"<!doctype html><p>Acknowledged: {len(acks)} keys rebased.</p>")
            return self.json({"acknowledged": [ack.as_json() for ack in acks]})

    class SnoozeView(faust.web.View):
        async def post(self, request: Any) -> Any:
            if not auth.is_analyst(request):
                return self.error(401, ANALYST_REQUIRED)
            if not await restored():
                return recovering(self)
            try:
                fields = await request_fields(request)
                target = str(fields.get("key") or fields.get("alert_id") or "")
                if not target:
                    raise ValueError("give key or alert_id")
                period = parse_duration(str(fields.get("for") or ""))
            except ValueError as exc:
                return self.error(400, f"snooze: {exc}")
            note = str(fields.get("note") or "")[:MAX_NOTE]
            snooze = spend.snooze_for(target, period, "analyst", note, datetime.now(UTC))
            if (refused := await record(self, [snooze])) is not None:
                return refused
            return self.json({"snoozed": snooze.as_json()})

    class AcksView(faust.web.View):
        async def get(self, request: Any) -> Any:
            if not auth.is_analyst(request):
                return self.error(401, ANALYST_REQUIRED)
            if not await restored():
                return recovering(self)
            in_force = spend.incidents.acks.in_force(datetime.now(UTC))
            return self.json(
                {
                    "acknowledgements": [ack.as_json() for ack in in_force],
                    "snoozed_findings": spend.incidents.snoozed_findings,
                }
            )

    async def record(view: faust.web.View, acks: list[Any]) -> Any:
        if not await resources.connected():
            return view.error(503, "ClickHouse is not connected")
        try:
            await resources.record_acknowledgements(acks)
        except Exception as exc:
            return view.error(503, f"not recorded: {str(exc).strip().splitlines()[0][:300]}")
        spend.apply_acknowledgements(acks)
        return None

    return AckView, SnoozeView, AcksView


def register_alert_views(
    app: faust.App, auth: RequestAuth, resources: WorkerResources, spend: SpendState
) -> None:
    ack, snooze, acks = alert_views(auth, resources, spend)
    # The fixed paths first: "snooze" and "acks" are not alert ids.
    app.page("/v1/alerts/snooze")(snooze)
    app.page("/v1/alerts/acks")(acks)
    app.page("/v1/alerts/{alert_id}/ack")(ack)
