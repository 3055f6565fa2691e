"""Case 8 in process: a tenant overflowing the spend tables' cap of distinct values
raises one `cardinality_overflow` alert through the real alert lifecycle and router,
resolves once its overflowing hours expire, and the overflow counts are exposed on
`SpendState.overflowed`. The spend tables, monitor, lifecycle and delivery queue
are the worker's own classes; only the tables are plain dicts instead of Faust's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.alert import Alert, AlertDelivery
from schemas.spend_config import SpendConfig
from streams.alerting.router import CONSOLE, SLACK_WARNING
from streams.alerting.wiring import build_alerting
from streams.spend.monitor import SpendMonitor
from streams.spend.state import SpendState
from streams.spend.tables import OVERFLOW, SEP, SpendTables

T0 = datetime(2026, 11, 20, 10, 15, tzinfo=UTC)
CAP = 5
RETENTION = 6


class Recorded:
    """A `DeliveryRecorder` that keeps the alert states the queue was handed."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def add_alert(self, alert: Alert) -> None:
        self.alerts.append(alert)

    def add_delivery(self, delivery: AlertDelivery) -> None:
        pass


def row(offset: int, at: datetime = T0, tenant: str = "acme", **overrides: Any) -> dict[str, Any]:
    base = {
        "request_id": f"{tenant}-r{offset}",
        "timestamp": at.isoformat(),
        "tenant_id": tenant,
        "team_id": "search",
        "user_id": "u1",
        "workflow_id": "answer",
        "workflow_run_id": "",
        "model": "gpt-4o-mini",
        "input_tokens": 1000,
        "output_tokens": 100,
        "request_count": 1,
        "retry_count": 0,
        "retry_of": "",
        "status_code": 200,
        "cost_usd": "0.0002100",
        "source_partition": 0,
        "source_offset": offset,
    }
    base.update(overrides)
    return base


def config(detectors: dict[str, Any] | None = None, **sections: Any) -> SpendConfig:
    """The default configuration without River's online detector (seconds to import,
    and not what these tests are about)."""
    return SpendConfig.model_validate(
        {"detectors": detectors or {"online": {"enabled": False}}, **sections}
    )


def runtime(spend_config: SpendConfig | None = None) -> tuple[SpendState, Recorded]:
    spend_config = spend_config or config()
    recorded = Recorded()
    tables = SpendTables({}, {}, {}, max_values_per_dim=CAP, hourly_retention_hours=RETENTION)
    monitor = SpendMonitor(spend_config)
    if monitor.cardinality is not None:
        monitor.cardinality.retention_hours = RETENTION  # as the tables'
    alerting = build_alerting(spend_config, embedded=True, recorder=recorded)
    return SpendState(spend_config, tables, monitor, alerting), recorded


def feed(rt: SpendState, tenant: str, rows: list[dict[str, Any]], now: datetime) -> None:
    """What the spend agent does with one costed message."""
    result = rt.tables.apply(tenant, rows)
    rt.handle_findings(rt.monitor.observe(rt.tables, tenant, result), now)
    rt.tables.expire(tenant, now)


def cardinality_alerts(recorded: Recorded) -> list[Alert]:
    return [a for a in recorded.alerts if a.detector == "cardinality_overflow"]


def test_a_tenant_past_its_cap_raises_one_alert_and_the_counts_show() -> None:
    rt, recorded = runtime()
    assert rt.overflowed == {"workflow": 0, "team": 0, "model": 0}
    # Under the cap: nothing.
    feed(rt, "acme", [row(i, workflow_id=f"wf-{i}") for i in range(CAP)], T0)
    assert cardinality_alerts(recorded) == []
    # Past it: one alert, whatever the number of batches and new values that follow.
    for batch in range(4):
        offsets = range(100 + 10 * batch, 110 + 10 * batch)
        feed(rt, "acme", [row(i, workflow_id=f"new-{i}") for i in offsets], T0)
    # Another tenant under the cap, sharing nothing with acme: no alert for it.
    feed(rt, "other", [row(i, tenant="other", workflow_id=f"wf-{i}") for i in range(CAP)], T0)
    alerts = cardinality_alerts(recorded)
    assert len(alerts) == 1, alerts
    alert = alerts[0]
    assert (alert.state, alert.severity, alert.unit) == ("triggered", "warning", "count")
    assert alert.key == f"tenant:acme/workflow:{OVERFLOW}"
    assert alert.tenant_id == "acme"
    assert f"more than {CAP} distinct workflow_id values" in alert.summary
    assert alert.evidence["max_values_per_dim"] == CAP
    assert alert.evidence["overflowed_requests_in_hour"] == 10  # the first overflowing batch
    assert "uniqExact(workflow_id)" in alert.query and "tenant_id = 'acme'" in alert.query
    assert rt.alerts_sent == 1
    assert rt.overflowed == {"workflow": 40, "team": 0, "model": 0}
    assert rt.tables.overflowed == 40
    # The worker's /stats shows this as JSON: plain ints.
    assert all(type(v) is int for v in rt.overflowed.values())


def test_team_and_model_overflow_alert_separately() -> None:
    rt, recorded = runtime()
    rows = [row(i, team_id=f"team-{i}", model=f"m-{i}") for i in range(CAP + 3)]
    feed(rt, "acme", rows, T0)
    keys = sorted(a.key for a in cardinality_alerts(recorded))
    assert keys == [f"tenant:acme/model:{OVERFLOW}", f"tenant:acme/team:{OVERFLOW}"]
    assert rt.overflowed == {"workflow": 0, "team": 3, "model": 3}


def test_the_alert_routes_as_a_warning_to_slack() -> None:
    slack = {"warning": {"slack": {"webhook_url": "https://hooks.slack.com/x"}}}
    rt, recorded = runtime(config(routing=slack))
    feed(rt, "acme", [row(i, workflow_id=f"wf-{i}") for i in range(CAP + 1)], T0)
    (alert,) = cardinality_alerts(recorded)
    assert rt.alerting.router.channels_for(alert) == (CONSOLE, SLACK_WARNING)


def test_it_resolves_once_the_overflowing_hours_expire_and_the_cap_frees() -> None:
    rt, recorded = runtime()
    feed(rt, "acme", [row(i, workflow_id=f"wf-{i}") for i in range(CAP + 2)], T0)
    (trigger,) = cardinality_alerts(recorded)
    # Still overflowing an hour later: same incident, no page.
    later = T0 + timedelta(hours=1)
    feed(rt, "acme", [row(50, at=later, workflow_id="late")], later)
    rt.resolve_cleared(later)
    assert len(cardinality_alerts(recorded)) == 1
    # The last overflowing hour (T0 + 1h) is still retained at T0 + 1h + RETENTION.
    rt.resolve_cleared(later + timedelta(hours=RETENTION))
    assert len(cardinality_alerts(recorded)) == 1
    past = later + timedelta(hours=RETENTION + 1)
    rt.resolve_cleared(past)
    trigger_, resolve = cardinality_alerts(recorded)
    assert trigger_ == trigger
    assert (resolve.state, resolve.fingerprint) == ("resolved", trigger.fingerprint)
    # The agent expires a tenant's keys while processing its messages (every 10 min):
    # the old hours go, and with them their workflows' places under the cap.
    rt.tables.expire("acme", past)
    fresh = past + timedelta(minutes=5)
    feed(rt, "acme", [row(60 + i, at=fresh, workflow_id=f"fresh-{i}") for i in range(CAP)], fresh)
    hour = int(fresh.timestamp()) // 3600
    assert SEP.join(("acme", "workflow", "fresh-4", str(hour))) in rt.tables.hourly
    assert SEP.join(("acme", "workflow", OVERFLOW, str(hour))) not in rt.tables.hourly
    assert len(cardinality_alerts(recorded)) == 2
    # One more value overflows again: a new incident, paged (the cooldown has passed).
    feed(rt, "acme", [row(70, at=fresh, workflow_id="one-too-many")], fresh)
    alerts = cardinality_alerts(recorded)
    assert len(alerts) == 3
    assert alerts[2].state == "triggered" and alerts[2].fingerprint != trigger.fingerprint


def test_after_a_restart_the_overflow_bucket_takes_no_place_under_the_cap() -> None:
    rt, _ = runtime()
    feed(rt, "acme", [row(i, workflow_id=f"wf-{i}") for i in range(CAP + 2)], T0)
    tables = SpendTables(
        rt.tables.hourly,
        rt.tables.totals,
        rt.tables.runs,
        max_values_per_dim=CAP + 1,
        hourly_retention_hours=RETENTION,
    )
    tables.rebuild_index()  # what a restarted worker does after table recovery
    tables.apply("acme", [row(100, workflow_id="sixth")])
    hour = int(T0.timestamp()) // 3600
    assert SEP.join(("acme", "workflow", "sixth", str(hour))) in tables.hourly
    assert tables.overflowed == 0


def test_disabled_it_raises_nothing_but_still_counts() -> None:
    rt, recorded = runtime(
        config({"cardinality": {"enabled": False}, "online": {"enabled": False}})
    )
    assert rt.monitor.cardinality is None
    feed(rt, "acme", [row(i, workflow_id=f"wf-{i}") for i in range(CAP + 2)], T0)
    assert cardinality_alerts(recorded) == []
    assert rt.overflowed["workflow"] == 2
    rt.resolve_cleared(T0 + timedelta(days=30))  # nothing to clear, nothing breaks
