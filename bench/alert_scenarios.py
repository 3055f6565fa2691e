"""A labelled scenario suite for the alerts: precision and recall of pages, cause
accuracy, time to page and pages on controls, through the real pipeline.

    python -m bench.alert_scenarios [--scenarios 50] [--days 8] [--seed 19]

`generate(count, days, seed)` builds multi-day scenarios of three tenants each: some
carry an injected incident of known kind, cause and start, the others are controls
that must never page. Tenants of different scenarios are independent (tenant ids are
prefixed by the scenario), so every scenario goes through one `spendstream replay`
into a fresh data dir, with one configuration file holding the tenants' budgets;
the `alerts` table is then read back and scored against the labels.

Incidents (kind -> expected cause or detector):
- runaway_loop: 8x the calls, most of them charged retries (`retry_of`, `retry_count`),
  some 429s -> retry_storm;
- model_substitution: gpt-4o-mini swapped for gpt-4o -> model_substitution;
- prompt_expansion: 8x the input tokens per call -> prompt_expansion;
- genuine_adoption: 6x the users and their calls -> genuine_adoption;
- over_contract: 4x the calls against a contracted hourly budget -> contract_hourly;
- budget_crossing: a monthly budget half spent at the incident start -> budget_*;
- costly_run: one workflow run costing over its $10 threshold -> run_cost.

Controls: office hours (busy afternoons, quiet nights, weekends, a holiday), a Monday
morning rush, slow growth (+3 % a day), a daily batch job (one hour at 15x, every
day), a tiny tenant (cents an hour, 30x bursts), a one-off burst under the $1 floor.

A page is a triggered alert of severity warning or critical. A page of an incident
tenant at or after the hour its incident starts is true (and, for a budget crossing,
any budget page: a budget half spent by day 3 or 4 is rightly forecast gone earlier);
any other page is false.
Time to page is event time: from the incident start to the page's `as_of` (the
newest event time counted when it fired) or, for detectors without one, the start
of its window.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

INCIDENTS = {
    "runaway_loop": "retry_storm",
    "model_substitution": "model_substitution",
    "prompt_expansion": "prompt_expansion",
    "genuine_adoption": "genuine_adoption",
    "over_contract": "contract_hourly",
    "budget_crossing": "budget",
    "costly_run": "run_cost",
}
# Causes the spike-cause classifier can name; the others are judged by detector.
CAUSED = {"runaway_loop", "model_substitution", "prompt_expansion", "genuine_adoption"}
CONTROLS = (
    "office_hours",
    "monday_rush",
    "slow_growth",
    "daily_batch",
    "tiny",
    "burst_under_floor",
)
# gpt-4o: $2.50 / $10 per million input / output tokens; gpt-4o-mini: $0.15 / $0.60.
INPUT_TOKENS, OUTPUT_TOKENS = 60_000, 4_000  # $0.19 a gpt-4o call


@dataclass
class Tenant:
    tenant_id: str
    kind: str
    scale: float  # calls per hour at the busiest ordinary hour
    start: datetime | None = None  # the incident's start (None for a control)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def is_incident(self) -> bool:
        return self.kind in INCIDENTS


@dataclass
class Scenario:
    name: str
    tenants: list[Tenant]


def generate(
    count: int = 50, days: int = 8, seed: int = 19, end: datetime | None = None
) -> tuple[list[Scenario], datetime, int]:
    """`count` scenarios of three tenants over at least `days` days ending at `end`
    (the current hour by default); the first instant of the series and its days."""
    rng = random.Random(seed)
    end = end or datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    # The series starts on a Monday at least `days` before the end: a tenant's first
    # week then has weekdays before its weekend, as any real tenant's has.
    first = (end - timedelta(days=days)).replace(hour=0)
    first -= timedelta(days=first.weekday())
    days = (end - first).days
    # Incidents start during working hours of the last weekday before the end.
    day = (end - timedelta(days=1)).replace(hour=0)
    while day.weekday() >= 5:
        day -= timedelta(days=1)
    kinds = list(INCIDENTS)
    scenarios = []
    for index in range(count):
        incident = kinds[index % len(kinds)]
        controls = rng.sample(CONTROLS, 2)
        tenants = []
        for j, kind in enumerate([incident, *controls]):
            tenant = Tenant(f"s{index:02d}-{j}-{kind}", kind, scale=rng.choice([8, 12, 20]))
            if tenant.is_incident:
                tenant.start = day.replace(hour=rng.randint(10, 15))
            tenants.append(tenant)
        scenarios.append(Scenario(f"s{index:02d}", tenants))
    return scenarios, first, days


def _calls(tenant: Tenant, at: datetime, n: int, rng: random.Random, holiday: int) -> float:
    """The ordinary calls in the `n`th hour of the series, starting at `at`."""
    weekday, hour = at.weekday(), at.hour
    working = weekday < 5 and at.toordinal() != holiday and 8 <= hour < 19
    base = (1.0 if 13 <= hour < 17 else 0.5) if working else 0.05
    if tenant.kind == "monday_rush" and weekday == 0 and 8 <= hour < 11:
        base = 1.0
    if tenant.kind == "slow_growth":
        base *= 1.03 ** (n / 24)
    if tenant.kind == "daily_batch" and hour == 2:
        base = 1.0 * 15 / 8
    return tenant.scale * base * rng.uniform(0.8, 1.2)


def events(tenant: Tenant, first: datetime, days: int, rng: random.Random) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    # A holiday in the first week, never the day an incident starts.
    holiday = (first + timedelta(days=rng.randint(1, 4))).toordinal()
    model = "gpt-4o-mini" if tenant.kind == "model_substitution" else "gpt-4o"
    for n in range(days * 24):
        at = first + timedelta(hours=n)
        calls = _calls(tenant, at, n, rng, holiday)
        users, input_tokens, retrying, chosen = 5, INPUT_TOKENS, False, model
        if tenant.kind == "tiny":
            input_tokens = 200  # cents an hour; a burst is 30x that and still under $1
            if rng.random() < 0.02:
                calls *= 30
        if tenant.kind == "burst_under_floor" and n == days * 24 - 20:
            calls, input_tokens = 80, 4_000  # about $0.84 (with 50 output tokens): under $1
        elif tenant.kind == "burst_under_floor":
            input_tokens = 1_000
        # Incidents start on the hour and last six hours.
        incident = tenant.start is not None and tenant.start <= at < tenant.start + timedelta(
            hours=6
        )
        if incident:
            if tenant.kind == "runaway_loop":
                calls, retrying = calls * 8, True
            elif tenant.kind == "model_substitution":
                chosen = "gpt-4o"
            elif tenant.kind == "prompt_expansion":
                input_tokens *= 8
            elif tenant.kind == "genuine_adoption":
                calls, users = calls * 6, users * 6
            elif tenant.kind == "over_contract":
                calls *= 4
        whole = int(calls) + (1 if rng.random() < calls - int(calls) else 0)
        for i in range(whole):
            moment = at + timedelta(seconds=int(3600 * (i + rng.random()) / whole))
            event: dict[str, Any] = {
                "request_id": f"{tenant.tenant_id}-{n}-{i}",
                "timestamp": moment.isoformat(),
                "tenant_id": tenant.tenant_id,
                "team_id": "core",
                "workflow_id": "answer",
                "user_id": f"u{rng.randrange(users)}",
                "provider": "openai",
                "model": chosen,
                "input_tokens": input_tokens,
                "output_tokens": 50
                if tenant.kind in ("tiny", "burst_under_floor")
                else OUTPUT_TOKENS,
                "status_code": 200,
            }
            if retrying and i % 8:
                # Retried calls that are answered (and charged); one in four a 429.
                event.update(retry_count=1, retry_of=f"{tenant.tenant_id}-{n}-{i - 1}")
                if i % 4 == 0:
                    event["status_code"] = 429
            out.append(event)
    if tenant.kind == "costly_run" and tenant.start is not None:
        for i in range(70):  # 70 calls of about $0.19: about $13, over the $10 threshold
            out.append(
                {
                    "request_id": f"{tenant.tenant_id}-run-{i}",
                    "timestamp": (tenant.start + timedelta(seconds=20 * i)).isoformat(),
                    "tenant_id": tenant.tenant_id,
                    "team_id": "core",
                    "workflow_id": "nightly-digest",
                    "workflow_run_id": f"{tenant.tenant_id}-run",
                    "user_id": "u0",
                    "provider": "openai",
                    "model": "gpt-4o",
                    "input_tokens": INPUT_TOKENS,
                    "output_tokens": OUTPUT_TOKENS,
                    "status_code": 200,
                }
            )
    return out


def _cost(event: dict[str, Any]) -> float:
    per_million = (0.15, 0.60) if event["model"] == "gpt-4o-mini" else (2.50, 10.0)
    return (event["input_tokens"] * per_million[0] + event["output_tokens"] * per_million[1]) / 1e6


def build(
    scenarios: list[Scenario], first: datetime, days: int, seed: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every scenario's events in event-time order, and the configuration file."""
    rng = random.Random(seed + 1)
    all_events: list[dict[str, Any]] = []
    tenants_config: dict[str, Any] = {}
    for scenario in scenarios:
        for tenant in scenario.tenants:
            own = events(tenant, first, days, rng)
            if tenant.kind == "over_contract":
                peak = max(tenant.scale * 1.2 * _cost(own[0]), 1.0)
                tenant.config = {"contracted_hourly_budget_usd": round(peak * 1.5, 2)}
            if tenant.kind == "budget_crossing" and tenant.start is not None:
                # A tenant new this month (its budget would be crossed in earlier months
                # otherwise), half its budget spent when the incident starts.
                month = tenant.start.replace(day=1, hour=0, minute=0)
                own = [e for e in own if datetime.fromisoformat(e["timestamp"]) >= month]
                spent = sum(
                    _cost(e)
                    for e in own
                    if month <= datetime.fromisoformat(e["timestamp"]) < tenant.start
                )
                tenant.config = {"monthly_budget_usd": round(max(spent * 2, 1.0), 2)}
            if tenant.config:
                tenants_config[tenant.tenant_id] = tenant.config
            all_events.extend(own)
    all_events.sort(key=lambda e: e["timestamp"])
    config = {
        "tenants": tenants_config,
        # The month-to-date forecast is left to the burn-rate alert.
        "detectors": {"contract": {"forecast": False}},
    }
    return all_events, config


def replay(
    events_: list[dict[str, Any]], config: dict[str, Any], root: Path
) -> list[dict[str, Any]]:
    """`spendstream replay` into a fresh data dir; the triggered alerts it recorded."""
    data = root / "events.ndjson"
    data.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events_))
    config_file = root / "config.yaml"
    config_file.write_text(json.dumps(config))  # JSON is YAML
    env = {**os.environ, "SPENDSTREAM_CONFIG_FILE": str(config_file)}
    data_dir = root / "data"
    command = [sys.executable, "-m", "streams.cli"]
    done = subprocess.run(
        [*command, "replay", str(data), "--data-dir", str(data_dir)],
        env=env,
        capture_output=True,
        timeout=7200,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr.decode()[-2000:])
    sql = (
        "SELECT detector, key, tenant_id, severity, cause, evidence, "
        "toString(window_start) AS window_start FROM alerts FINAL "
        "WHERE state IN ('triggered', 'escalated') AND severity IN ('warning', 'critical')"
    )
    read = subprocess.run(
        [*command, "query", sql, "--data-dir", str(data_dir), "--format", "json"],
        env=env,
        capture_output=True,
        timeout=600,
        check=False,
    )
    if read.returncode != 0:
        raise RuntimeError(read.stderr.decode()[-2000:])
    return list(orjson.loads(read.stdout))


def _paged_at(alert: dict[str, Any]) -> datetime:
    evidence = json.loads(alert["evidence"] or "{}")
    moment = evidence.get("as_of") or alert["window_start"]
    parsed = datetime.fromisoformat(str(moment).replace(" ", "T"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _expected(tenant: Tenant, alert: dict[str, Any]) -> bool:
    """Whether the page names the incident: its cause, or its detector for the kinds
    the cause classifier does not name."""
    want = INCIDENTS[tenant.kind]
    if tenant.kind in CAUSED:
        return alert["cause"] == want or (want == "retry_storm" and alert["detector"] == want)
    return str(alert["detector"]).startswith(want)


def score(scenarios: list[Scenario], alerts: list[dict[str, Any]], days: int) -> dict[str, Any]:
    by_tenant: dict[str, list[dict[str, Any]]] = {}
    for alert in alerts:
        by_tenant.setdefault(str(alert["tenant_id"]), []).append(alert)
    true_pages = false_pages = control_pages = 0
    detected = causes_right = causes_judged = 0
    delays: list[float] = []
    delays_by_kind: dict[str, list[float]] = {}
    incidents = controls = 0
    misses: list[str] = []
    false_list: list[str] = []
    wrong_causes: list[str] = []
    for scenario in scenarios:
        for tenant in scenario.tenants:
            pages = sorted(by_tenant.get(tenant.tenant_id, []), key=_paged_at)
            if not tenant.is_incident:
                controls += 1
                control_pages += len(pages)
                false_pages += len(pages)
                false_list += [f"{tenant.tenant_id}: {p['detector']} {p['cause']}" for p in pages]
                continue
            incidents += 1
            assert tenant.start is not None
            hour = tenant.start.replace(minute=0)
            # A budget half spent by day 3 or 4 of the month is gone within the week: a
            # burn-rate page before the 50 % crossing is the budget alert arriving early.
            after = [
                p
                for p in pages
                if _paged_at(p) >= hour
                or (tenant.kind == "budget_crossing" and str(p["detector"]).startswith("budget"))
            ]
            true_pages += len(after)
            false_pages += len(pages) - len(after)
            false_list += [
                f"{tenant.tenant_id}: early {p['detector']}" for p in pages if p not in after
            ]
            if not after:
                misses.append(tenant.tenant_id)
                continue
            detected += 1
            delay = max(0.0, (_paged_at(after[0]) - tenant.start).total_seconds() / 60)
            delays.append(delay)
            delays_by_kind.setdefault(tenant.kind, []).append(delay)
            causes_judged += 1
            if any(_expected(tenant, p) for p in after[:3]):
                causes_right += 1
            else:
                got = ", ".join(f"{p['detector']}/{p['cause'] or '-'}" for p in after[:3])
                wrong_causes.append(f"{tenant.tenant_id}: {got}")
    total = true_pages + false_pages
    ordered = sorted(delays)
    return {
        "scenarios": len(scenarios),
        "incident_tenants": incidents,
        "control_tenants": controls,
        "pages": total,
        "precision": round(true_pages / total, 3) if total else None,
        "recall": round(detected / incidents, 3) if incidents else None,
        "cause_accuracy": round(causes_right / causes_judged, 3) if causes_judged else None,
        "median_minutes_to_page": round(statistics.median(ordered), 1) if ordered else None,
        "p95_minutes_to_page": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1)
        if ordered
        else None,
        "median_minutes_to_page_by_kind": {
            kind: round(statistics.median(found), 1)
            for kind, found in sorted(delays_by_kind.items())
        },
        "control_pages": control_pages,
        "control_pages_per_tenant_week": round(control_pages / (controls * days / 7), 3)
        if controls
        else None,
        "missed": misses[:20],
        "false_pages": false_list[:20],
        "wrong_causes": wrong_causes[:20],
    }


def run(count: int, days: int, seed: int) -> dict[str, Any]:
    scenarios, first, days = generate(count, days, seed)
    all_events, config = build(scenarios, first, days, seed)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="spendstream-scenarios-") as tmp:
        alerts = replay(all_events, config, Path(tmp))
    result = score(scenarios, alerts, days)
    result.update(
        benchmark="alert_scenarios",
        events=len(all_events),
        days=days,
        seed=seed,
        seconds=round(time.monotonic() - started, 1),
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", type=int, default=50)
    parser.add_argument("--days", type=int, default=8)
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--quick", action="store_true", help="7 scenarios (one per incident kind)")
    args = parser.parse_args()
    result = run(7 if args.quick else args.scenarios, args.days, args.seed)
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
