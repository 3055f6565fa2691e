"""Synthetic usage traffic: tenants, teams, users, workflows and runs, several providers
and models, a daily rhythm, and injectable incidents for the detectors.

`TrafficGenerator` is pure (seeded, clock passed in) so tests and benchmarks reuse it;
`run_simulate` publishes its events to Kafka at a rate.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from streams.kafka.admin import wait_for_broker

INJECTIONS = ("runaway-loop", "model-swap", "prompt-bloat", "retry-storm")
INCIDENT_TENANT = "acme"


@dataclass(frozen=True)
class Workflow:
    tenant_id: str
    team_id: str
    workflow_id: str
    feature_name: str
    provider: str
    model: str
    input_mean: int
    output_mean: int
    calls_per_run: int


# Each tenant's workflows; the incident tenant is the first one.
WORKFLOWS = (
    Workflow("acme", "search", "answer-question", "qa", "openai", "gpt-4o-mini", 1800, 350, 3),
    Workflow(
        "acme",
        "support",
        "summarize-ticket",
        "support",
        "anthropic",
        "claude-haiku-4-5",
        2500,
        300,
        1,
    ),
    Workflow("globex", "research", "deep-research", "research", "openai", "o3-mini", 6000, 2500, 8),
    Workflow(
        "globex", "sales", "draft-email", "outreach", "anthropic", "claude-sonnet-4-5", 1200, 600, 1
    ),
    Workflow(
        "initech", "platform", "classify-doc", "ingest", "google", "gemini-2.5-flash", 3000, 40, 1
    ),
    Workflow("initech", "platform", "extract-fields", "ingest", "openai", "gpt-4o", 2200, 400, 2),
    Workflow(
        "umbrella", "labs", "agent-loop", "agents", "anthropic", "claude-sonnet-4-5", 9000, 900, 6
    ),
    Workflow("hooli", "growth", "personalize", "growth", "openai", "gpt-4o-mini", 800, 200, 1),
)
USERS_PER_TENANT = 40
ENVIRONMENTS = ("production", "production", "production", "staging")


def daily_rhythm(moment: datetime) -> float:
    """Traffic multiplier: busy at 15:00 UTC, quiet at 03:00, lighter at weekends."""
    hour = moment.hour + moment.minute / 60
    weekday = 1.0 if moment.weekday() < 5 else 0.45
    return weekday * (0.35 + 0.65 * (1 + math.sin((hour - 9) / 24 * 2 * math.pi)) / 2)


class TrafficGenerator:
    def __init__(self, seed: int | None = None, inject: str | None = None) -> None:
        if inject is not None and inject not in INJECTIONS:
            raise ValueError(f"unknown injection {inject!r}; choose from {', '.join(INJECTIONS)}")
        self.random = random.Random(seed)
        self.inject = inject
        self._runs: dict[str, tuple[str, int]] = {}
        self._runaway_run = f"run-runaway-{self.random.getrandbits(32):08x}"
        # The loop re-issues its step: each call names the one before (retry_of).
        self._runaway_last = ""

    def _request_id(self) -> str:
        return str(uuid.UUID(int=self.random.getrandbits(128), version=4))

    def _tokens(self, mean: int) -> int:
        return max(1, int(self.random.lognormvariate(math.log(mean), 0.35)))

    def _run_id(self, workflow: Workflow) -> str:
        run_id, left = self._runs.get(workflow.workflow_id, ("", 0))
        if left <= 0:
            run_id, left = f"run-{self.random.getrandbits(48):012x}", workflow.calls_per_run
        self._runs[workflow.workflow_id] = (run_id, left - 1)
        return run_id

    def event(self, now: datetime) -> dict[str, Any]:
        """One usage event at `now`; an injected incident targets tenant acme."""
        workflow = self.random.choice(WORKFLOWS)
        incident = self.inject is not None and workflow.tenant_id == "acme"
        if self.inject == "runaway-loop" and self.random.random() < 0.5:
            workflow, incident = WORKFLOWS[0], True
        model, input_mean = workflow.model, workflow.input_mean
        retry_count, status, retry_of = 0, 200, ""
        run_id = self._run_id(workflow)
        user = f"user-{self.random.randrange(USERS_PER_TENANT):03d}"
        if incident and self.inject == "model-swap" and workflow.model == "gpt-4o-mini":
            model = "gpt-4o"
        if incident and self.inject == "prompt-bloat":
            input_mean *= 8
        if incident and self.inject == "retry-storm" and self.random.random() < 0.6:
            retry_count, status = self.random.randint(1, 5), self.random.choice((429, 500, 503))
            retry_of = self._request_id()
            user = "user-000"
        runaway = incident and self.inject == "runaway-loop" and workflow is WORKFLOWS[0]
        if runaway:
            run_id, user, input_mean = self._runaway_run, "user-007", input_mean * 4
            retry_of, retry_count = self._runaway_last, 1 if self._runaway_last else 0
        input_tokens = self._tokens(input_mean)
        output_tokens = self._tokens(workflow.output_mean)
        cached = int(input_tokens * self.random.choice((0, 0, 0.3, 0.6)))
        reasoning = int(output_tokens * 0.6) if model.startswith("o") else 0
        event: dict[str, Any] = {
            "request_id": self._request_id(),
            "timestamp": now.isoformat(),
            "tenant_id": workflow.tenant_id,
            "team_id": workflow.team_id,
            "user_id": f"{workflow.tenant_id}-{user}",
            "feature_name": workflow.feature_name,
            "workflow_id": workflow.workflow_id,
            "workflow_run_id": run_id,
            "workflow_name": workflow.workflow_id.replace("-", " "),
            "environment": self.random.choice(ENVIRONMENTS),
            "provider": workflow.provider,
            "model": model,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cached_tokens": cached if workflow.provider != "google" else 0,
            "reasoning_tokens": reasoning,
            "latency_ms": int(self.random.lognormvariate(math.log(900), 0.5)),
            "status_code": status,
            "retry_count": retry_count,
            "retry_of": retry_of,
        }
        if runaway:
            self._runaway_last = event["request_id"]
        return event


async def publish_traffic(
    bootstrap: str,
    topic: str,
    rate: float,
    duration: float | None,
    generator: TrafficGenerator,
    stop: asyncio.Event | None = None,
) -> int:
    """Publish at `rate` events/s (shaped by the daily rhythm) until duration or stop."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    sent = 0
    started = last = time.monotonic()
    due = 0.0
    try:
        while duration is None or last - started < duration:
            if stop is not None and stop.is_set():
                break
            await asyncio.sleep(0.05)
            now_mono = time.monotonic()
            now = datetime.now(UTC)
            due += rate * daily_rhythm(now) * (now_mono - last)
            last = now_mono
            pending = []
            while due >= 1:
                event = generator.event(now)
                key = event["request_id"].encode()
                pending.append(await producer.send(topic, orjson.dumps(event), key=key))
                due -= 1
            await asyncio.gather(*pending)
            sent += len(pending)
    finally:
        await producer.stop()
    return sent


def run_simulate(
    bootstrap: str,
    topic: str,
    rate: float,
    duration: float | None,
    inject: str | None,
    seed: int | None,
) -> int:
    async def main() -> int:
        await wait_for_broker(bootstrap)
        return await publish_traffic(
            bootstrap, topic, rate, duration, TrafficGenerator(seed, inject)
        )

    try:
        sent = asyncio.run(main())
    except KeyboardInterrupt:
        return 130
    print(f"published {sent} events to {topic}")
    return 0


@dataclass(frozen=True)
class Incident:
    """An injection that runs for `hours` from `start_hours_ago` before the end of history,
    with `rate_factor` times the usual traffic (a loop calls far more often)."""

    inject: str
    start_hours_ago: float
    hours: float
    rate_factor: float = 1.0


# A few incidents in two weeks of history, the last one still under way at its end so
# that `dev --backfill` pages it within its first minute.
HISTORY_INCIDENTS = (
    Incident("model-swap", start_hours_ago=9 * 24 + 6, hours=5),
    Incident("retry-storm", start_hours_ago=4 * 24 + 3, hours=2),
    Incident("runaway-loop", start_hours_ago=1.5, hours=1.5, rate_factor=40),
)


def history(
    seconds: float,
    rate: float,
    end: datetime,
    seed: int | None = None,
    incidents: tuple[Incident, ...] = HISTORY_INCIDENTS,
) -> Iterator[dict[str, Any]]:
    """`seconds` of traffic before `end`, in time order, as `publish_traffic` would have
    sent it at `rate` events/s (the same daily and weekly rhythm), with `incidents`."""
    normal = TrafficGenerator(seed)
    injected = {
        incident: TrafficGenerator(None if seed is None else seed + i + 1, incident.inject)
        for i, incident in enumerate(incidents)
    }
    step = 60.0
    due = extra = 0.0
    start = end.timestamp() - seconds
    for minute in range(int(seconds // step)):
        moment = datetime.fromtimestamp(start + minute * step, UTC)
        hours_ago = (end - moment).total_seconds() / 3600
        active = [
            i for i in incidents if i.start_hours_ago >= hours_ago > i.start_hours_ago - i.hours
        ]
        generator = injected[active[0]] if active else normal
        usual = rate * daily_rhythm(moment) * step
        due += usual
        count, due = int(due), due - int(due)
        for n in range(count):
            yield generator.event(moment + timedelta(seconds=step * n / count))
        if active and active[0].rate_factor > 1:
            # The incident's own extra calls, on the incident tenant only.
            extra += usual * (active[0].rate_factor - 1)
            more, extra = int(extra), extra - int(extra)
            for n in range(more):
                event = generator.event(moment + timedelta(seconds=step * n / more))
                if event["tenant_id"] == INCIDENT_TENANT:
                    yield event


def parse_span(text: str) -> float:
    """Seconds of `14d`, `36h`, `90m`."""
    units = {"d": 86400, "h": 3600, "m": 60}
    try:
        value, unit = float(text[:-1]), units[text[-1]]
    except (KeyError, ValueError, IndexError):
        raise ValueError(f"not a span like 14d, 36h or 90m: {text!r}") from None
    if value <= 0:
        raise ValueError(f"not a positive span: {text!r}")
    return value * unit
