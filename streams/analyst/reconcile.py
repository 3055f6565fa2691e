"""Reconciliation: the ledger's cost against a provider's own cost export, per UTC day
and model, flagging differences over 2 %.

Accepted inputs (docs/analyst.md has examples):

OpenAI — the organization Costs API (`GET /v1/organization/costs`, daily buckets,
ideally `group_by=line_item`) saved as JSON: one page object, a list of pages, or
one page per line. Buckets have `start_time` (Unix seconds) and `results` with
`amount.value` (USD) and `line_item` (e.g. "gpt-4o-2024-08-06, input"). Or the
same flattened to CSV with columns `start_time` (Unix seconds or an ISO date),
`amount_value` (USD) and optionally `line_item`, `project_id`, `amount_currency`.

Anthropic — the Admin API cost report (`GET /v1/organizations/cost_report`,
`group_by[]=description` for models) saved as JSON: pages with `data[]` buckets of
`starting_at` (RFC 3339) and `results` with `amount` (a decimal string in cents,
"123.45" is $1.23), `currency`, `model`, `description`, `cost_type`. Or the same
flattened to CSV with columns `starting_at`, `amount` (cents) or `amount_usd`
(dollars), and optionally `model`, `description`, `cost_type`.

Without a model in the export (no line-item/description grouping), the day's total
is compared with the ledger's total for that provider.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from streams.analyst.money import CENT, ZERO, exact, usd
from streams.analyst.tables import text_table
from streams.errors import SpendstreamError
from streams.ledger.remote import Reader

PROVIDERS = ("openai", "anthropic")
TOLERANCE = Decimal("0.02")
ALL_MODELS = "(all models)"
_SNAPSHOT_DATE = re.compile(r"-\d{4}-?\d{2}-?\d{2}$")


class ReconcileInputError(SpendstreamError):
    """The provider export cannot be read."""


@dataclass(frozen=True)
class ProviderCost:
    day: date
    key: str  # normalized model, or ALL_MODELS
    amount: Decimal


@dataclass(frozen=True)
class ReconcileLine:
    day: date
    key: str
    ledger: Decimal
    provider: Decimal

    @property
    def difference(self) -> Decimal:
        return self.ledger - self.provider

    @property
    def relative(self) -> Decimal | None:
        return self.difference / self.provider if self.provider else None

    @property
    def flagged(self) -> bool:
        # Under a cent is rounding in the provider's export, never a finding.
        if abs(self.difference) < CENT:
            return False
        return self.provider == 0 or abs(self.difference) > TOLERANCE * abs(self.provider)


def normalize_model(name: str) -> str:
    """Lower case, without an OpenAI line item's token class (", input") or a
    snapshot date suffix, so "gpt-4o-2024-08-06, input" and "gpt-4o" meet."""
    base = name.split(",", 1)[0].strip().lower()
    return _SNAPSHOT_DATE.sub("", base)


def read_provider_costs(path: Path, provider: str) -> list[ProviderCost]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ReconcileInputError(f"cannot read {path}: {exc.strerror}") from None
    records = _csv_records(text) if path.suffix.lower() == ".csv" else _json_records(text, path)
    parse = _openai_cost if provider == "openai" else _anthropic_cost
    costs: list[ProviderCost] = []
    for number, record in enumerate(records, start=1):
        try:
            costs.append(parse(record))
        except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
            raise ReconcileInputError(
                f"{path}: record {number} is not a {provider} cost record ({exc!s})"
            ) from None
    if not costs:
        raise ReconcileInputError(f"{path}: no {provider} cost records found")
    return costs


def _json_records(text: str, path: Path) -> Iterator[dict[str, Any]]:
    try:
        documents = [json.loads(text, parse_float=Decimal)]
    except json.JSONDecodeError:
        try:  # one page per line
            documents = [
                json.loads(line, parse_float=Decimal) for line in text.splitlines() if line.strip()
            ]
        except json.JSONDecodeError as exc:
            raise ReconcileInputError(f"{path}: not JSON or JSON lines ({exc.msg})") from None
    for document in documents:
        pages = document if isinstance(document, list) else [document]
        for page in pages:
            buckets = page.get("data", [page]) if isinstance(page, dict) else []
            for bucket in buckets:
                results = bucket.get("results", bucket.get("result", []))
                for result in results:
                    yield {**result, **_bucket_start(bucket)}


def _bucket_start(bucket: dict[str, Any]) -> dict[str, Any]:
    return {key: bucket[key] for key in ("start_time", "starting_at") if key in bucket}


def _csv_records(text: str) -> Iterator[dict[str, Any]]:
    yield from csv.DictReader(io.StringIO(text))


def _day(value: Any) -> date:
    if isinstance(value, int | Decimal) or (isinstance(value, str) and value.isdigit()):
        return datetime.fromtimestamp(int(value), UTC).date()
    text = str(value).strip().replace("Z", "+00:00")
    parsed = datetime.fromisoformat(text) if "T" in text or " " in text else None
    if parsed is None:
        return date.fromisoformat(text[:10])
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC).date()


def _openai_cost(record: dict[str, Any]) -> ProviderCost:
    amount = record.get("amount")
    if isinstance(amount, dict):
        value, currency = amount.get("value"), amount.get("currency", "usd")
    else:
        value = record.get("amount_value", amount)
        currency = record.get("amount_currency") or record.get("currency") or "usd"
    if str(currency).lower() != "usd":
        raise ValueError(f"currency {currency} is not USD")
    line_item = record.get("line_item") or ""
    key = normalize_model(line_item) if line_item else ALL_MODELS
    return ProviderCost(_day(record["start_time"]), key, Decimal(str(value)))


def _anthropic_cost(record: dict[str, Any]) -> ProviderCost:
    currency = record.get("currency") or "USD"
    if str(currency).upper() != "USD":
        raise ValueError(f"currency {currency} is not USD")
    if record.get("amount_usd") not in (None, ""):
        dollars = Decimal(str(record["amount_usd"]))
    else:
        dollars = Decimal(str(record["amount"])) / 100  # the API reports cents
    model = record.get("model") or ""
    key = normalize_model(model) if model else _non_model_key(record)
    return ProviderCost(_day(record["starting_at"]), key, dollars)


def _non_model_key(record: dict[str, Any]) -> str:
    kind = record.get("cost_type") or record.get("description") or ""
    return f"({kind})" if kind and kind != "tokens" else ALL_MODELS


def reconcile(client: Reader, provider: str, costs: list[ProviderCost]) -> list[ReconcileLine]:
    by_model = any(cost.key != ALL_MODELS for cost in costs)
    provider_side: dict[tuple[date, str], Decimal] = defaultdict(lambda: ZERO)
    for cost in costs:
        provider_side[(cost.day, cost.key)] += cost.amount
    first = min(cost.day for cost in costs)
    last = max(cost.day for cost in costs)
    ledger_side: dict[tuple[date, str], Decimal] = defaultdict(lambda: ZERO)
    rows = client.query(
        "SELECT day, model, sum(cost_usd) FROM model_daily "
        "WHERE provider = {provider:String} AND day BETWEEN {first:Date} AND {last:Date} "
        "GROUP BY day, model",
        parameters={"provider": provider, "first": first, "last": last},
    ).result_rows
    for day, model, cost in rows:
        ledger_side[(day, normalize_model(model) if by_model else ALL_MODELS)] += cost
    keys = sorted(set(provider_side) | set(ledger_side))
    return [
        ReconcileLine(
            day, key, ledger_side.get((day, key), ZERO), provider_side.get((day, key), ZERO)
        )
        for day, key in keys
    ]


def render(lines: list[ReconcileLine], provider: str) -> str:
    headers = ["day", "model", "ledger", "provider", "difference", "diff %", "flag"]
    rows = [
        [
            str(line.day),
            line.key,
            usd(line.ledger),
            usd(line.provider),
            exact(line.difference.quantize(Decimal("0.000001"))),
            f"{line.relative * 100:+.2f}%" if line.relative is not None else "–",
            "CHECK" if line.flagged else "ok",
        ]
        for line in lines
    ]
    flagged = sum(line.flagged for line in lines)
    ledger_total = sum((line.ledger for line in lines), ZERO)
    provider_total = sum((line.provider for line in lines), ZERO)
    return (
        f"Reconciliation against {provider}: {len(lines)} day × model rows, "
        f"{flagged} over {TOLERANCE * 100:.0f}% (flag CHECK)\n"
        f"ledger {usd(ledger_total)}, provider {usd(provider_total)}\n\n"
        + text_table(headers, rows)
        + "\n"
    )
