"""What-if: a period of the ledger re-priced under a scenario (`schemas.scenario`),
reported per workflow, tenant and model as actual, scenario, difference and the
calls affected. Read-only: nothing is written anywhere.

Actual is each call's effective cost (ledger cost plus its re-pricing
corrections). A call is re-priced when a substitution matches it, or for every
call when the scenario sets a lever that applies to all (a price card, a cache
hit rate, a service tier, batch); other calls keep their actual cost. The
scenario prices are the price card's overrides over the public catalog (the
ledger may have been priced with your own pricing file: pass it as the price
card to compare like with like). A call whose scenario model has no price
keeps its actual cost and is counted as `unpriced`.

Cache hit rate r: of each call's input tokens that are not cache writes, the
share r (rounded half up to a whole token) is read from cache, the rest is
uncached input; cache writes are unchanged.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from schemas.scenario import Scenario
from streams.analyst.money import ZERO, exact, percent_change, usd
from streams.analyst.periods import Period
from streams.analyst.reprice import DIMENSIONS, effective_rows
from streams.analyst.tables import markdown_table, text_table
from streams.cost.catalog import PriceCatalog, PriceContext, read_yaml_model
from streams.ledger.remote import Reader

FORMATS = ("table", "md", "json", "csv")
GROUPS = ("workflow", "tenant", "model")
NONE_LABEL = "(none)"


@dataclass
class Line:
    key: str
    calls: int = 0
    affected: int = 0
    unpriced: int = 0
    actual: Decimal = ZERO
    scenario: Decimal = ZERO

    @property
    def difference(self) -> Decimal:
        return self.scenario - self.actual

    def add(self, requests: int, actual: Decimal, scenario: Decimal, affected: bool) -> None:
        self.calls += requests
        self.actual += actual
        self.scenario += scenario
        if affected:
            self.affected += requests


@dataclass
class WhatIf:
    period: Period
    scenario: Scenario
    total: Line = field(default_factory=lambda: Line("total"))
    groups: dict[str, dict[str, Line]] = field(
        default_factory=lambda: {group: {} for group in GROUPS}
    )

    def lines(self, group: str) -> list[Line]:
        return sorted(
            self.groups[group].values(), key=lambda line: (-abs(line.difference), line.key)
        )


def what_if(client: Reader, catalog: PriceCatalog, scenario: Scenario, period: Period) -> WhatIf:
    result = WhatIf(period, scenario)
    for day in period.days:
        for row in effective_rows(client, day):
            _add(result, catalog, scenario, row)
    return result


def _add(result: WhatIf, catalog: PriceCatalog, scenario: Scenario, row: Sequence[Any]) -> None:
    dims = dict(zip(DIMENSIONS, row[2:12], strict=True))
    requests = row[12]
    actual = sum(row[18:23], ZERO)
    repriced = _scenario_cost(catalog, scenario, dims, row)
    unpriced = repriced is False
    cost = actual if isinstance(repriced, bool) else repriced
    affected = cost != actual
    keys = {
        "workflow": dims["workflow_id"] or NONE_LABEL,
        "tenant": dims["tenant_id"],
        "model": f"{dims['provider']}/{dims['model']}",
    }
    for line in (
        result.total,
        *(result.groups[group].setdefault(key, Line(key)) for group, key in keys.items()),
    ):
        line.add(requests, actual, cost, affected)
        if unpriced:
            line.unpriced += requests


def _scenario_cost(
    catalog: PriceCatalog, scenario: Scenario, dims: dict[str, Any], row: Sequence[Any]
) -> Decimal | bool:
    """The call's cost under the scenario; True when no lever touches it, False when
    the scenario's model has no price."""
    provider, model = dims["provider"], dims["model"]
    swap = next(
        (
            s
            for s in scenario.substitutions
            if s.matches(provider, model, dims["workflow_id"], dims["tenant_id"])
        ),
        None,
    )
    if swap is None and not scenario.reprices_every_call:
        return True
    if swap is not None:
        provider, model = swap.target(provider)
    timestamp = row[1] if row[1].tzinfo else row[1].replace(tzinfo=UTC)
    input_tokens, output_tokens, cached, cache_write, reasoning = row[13:18]
    cache_write_1h, service_tier, batch = row[25:28]
    if scenario.cache_hit_rate is not None:
        eligible = Decimal(input_tokens - cache_write)
        cached = int((eligible * scenario.cache_hit_rate).to_integral_value(ROUND_HALF_UP))
    context = PriceContext.of(
        scenario.service_tier if scenario.service_tier is not None else service_tier,
        scenario.batch if scenario.batch is not None else bool(batch),
    )
    prices = catalog.resolve(provider, model, timestamp, context)
    if prices is None:
        return False
    return prices.cost(
        input_tokens, cached, cache_write, output_tokens, reasoning, cache_write_1h
    ).total


HEADERS = ["calls", "affected", "actual (USD)", "scenario (USD)", "difference (USD)", "change"]


def _cells(line: Line) -> list[str]:
    # Exact amounts: a what-if on a few calls is often below a cent.
    return [
        f"{line.calls:,}",
        f"{line.affected:,}",
        exact(line.actual),
        exact(line.scenario),
        exact(line.difference),
        percent_change(line.scenario, line.actual),
    ]


def load_scenario(path: Path) -> Scenario:
    """A scenario file; its `pricing` path is relative to the file."""
    scenario = read_yaml_model(path, Scenario, "scenario file")
    if scenario.pricing is not None and not scenario.pricing.is_absolute():
        scenario = scenario.model_copy(update={"pricing": path.parent / scenario.pricing})
    return scenario


def render(report: WhatIf, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(as_json(report), indent=2) + "\n"
    if fmt == "csv":
        return _csv(report)
    table = markdown_table if fmt == "md" else text_table
    heading = "# " if fmt == "md" else ""
    sub = "## " if fmt == "md" else ""
    parts = [
        f"{heading}What if, {report.period.start} – {report.period.end}: "
        + "; ".join(report.scenario.describe() or ["no change"]),
        "",
        f"Actual {usd(report.total.actual)}, scenario {usd(report.total.scenario)}, "
        f"difference {_signed_usd(report.total.difference)} "
        f"({percent_change(report.total.scenario, report.total.actual)}); "
        f"{report.total.affected:,} of {report.total.calls:,} calls affected.",
    ]
    if report.total.unpriced:
        parts.append(
            f"{report.total.unpriced:,} calls have no price under the scenario and keep "
            "their actual cost."
        )
    for group in GROUPS:
        parts += ["", f"{sub}By {group}", ""]
        rows = [[line.key, *_cells(line)] for line in report.lines(group)]
        parts.append(table([group, *HEADERS], rows))
    return "\n".join(parts) + "\n"


def _signed_usd(amount: Decimal) -> str:
    return f"-{usd(-amount)}" if amount < 0 else f"+{usd(amount)}"


def _json_line(line: Line) -> dict[str, Any]:
    return {
        "key": line.key,
        "calls": line.calls,
        "calls_affected": line.affected,
        "calls_unpriced": line.unpriced,
        "actual_usd": exact(line.actual),
        "scenario_usd": exact(line.scenario),
        "difference_usd": exact(line.difference),
    }


def as_json(report: WhatIf) -> dict[str, Any]:
    return {
        "from": report.period.start.isoformat(),
        "to": report.period.end.isoformat(),
        "scenario": report.scenario.model_dump(mode="json", by_alias=True, exclude_none=True),
        "total": _json_line(report.total),
        **{f"by_{group}": [_json_line(line) for line in report.lines(group)] for group in GROUPS},
    }


def _csv(report: WhatIf) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = ["calls", "calls_affected", "calls_unpriced", "actual_usd", "scenario_usd"]
    writer.writerow(["by", "key", *columns, "difference_usd"])
    rows: Iterable[tuple[str, Line]] = [("total", report.total)] + [
        (group, line) for group in GROUPS for line in report.lines(group)
    ]
    for group, line in rows:
        values = _json_line(line)
        writer.writerow([group, line.key, *(values[c] for c in columns), values["difference_usd"]])
    return buffer.getvalue()
