"""Chargeback: a month's corrected spend split by team, tenant, feature or environment.

The exact amounts add up to the ledger total for the month (plus corrections) to
the last of their 18 decimals. The charged amounts are in cents, allocated by
largest remainder (`money.allocate_cents`) so that they add up to the month's
total rounded to the cent.

Calls to models with no price are not charged: their estimates (view
`estimated_spend_daily`, docs/pricing.md) are shown beside each line, apart.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from decimal import Decimal

from streams.analyst.money import ZERO, allocate_cents, exact, to_cents, usd
from streams.analyst.periods import Period
from streams.analyst.tables import markdown_table
from streams.ledger.remote import Reader

DIMENSIONS = {
    "team": "team_id",
    "tenant": "tenant_id",
    "feature": "feature_name",
    "environment": "environment",
}
FORMATS = ("csv", "md")
UNATTRIBUTED = "(unattributed)"


@dataclass(frozen=True)
class ChargebackLine:
    key: str
    cost: Decimal
    charged: Decimal
    estimated: Decimal = ZERO  # calls to models with no price, not charged


@dataclass(frozen=True)
class Chargeback:
    month: Period
    by: str
    lines: list[ChargebackLine]

    @property
    def total(self) -> Decimal:
        return sum((line.cost for line in self.lines), ZERO)

    @property
    def charged_total(self) -> Decimal:
        return sum((line.charged for line in self.lines), ZERO)

    @property
    def estimated_total(self) -> Decimal:
        return sum((line.estimated for line in self.lines), ZERO)


def build_chargeback(client: Reader, month: Period, by: str) -> Chargeback:
    column = DIMENSIONS[by]
    rows = client.query(
        f"SELECT {column}, sum(cost_usd) FROM spend_daily "
        "WHERE day BETWEEN {start:Date} AND {end:Date} "
        f"GROUP BY {column} ORDER BY {column}",
        parameters={"start": month.start, "end": month.end},
    ).result_rows
    estimated: dict[str, Decimal] = {
        key: amount
        for key, amount in client.query(
            f"SELECT {column}, sum(estimated_cost_usd) FROM estimated_spend_daily "
            "WHERE day BETWEEN {start:Date} AND {end:Date} "
            f"GROUP BY {column}",
            parameters={"start": month.start, "end": month.end},
        ).result_rows
    }
    known: dict[str, Decimal] = {key: cost for key, cost in rows}
    raw_keys = sorted(known.keys() | estimated.keys())
    costs = [known.get(key, ZERO) for key in raw_keys]
    charged = allocate_cents(costs)
    lines = [
        ChargebackLine(key or UNATTRIBUTED, cost, cents, estimated.get(key, ZERO))
        for key, cost, cents in zip(raw_keys, costs, charged, strict=True)
    ]
    return Chargeback(month, by, sorted(lines, key=lambda line: (-line.cost, line.key)))


def _share(line: ChargebackLine, total: Decimal) -> str:
    return f"{Decimal(100) * line.cost / total:.2f}" if total else "0.00"


def render_csv(chargeback: Chargeback) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([chargeback.by, "cost_usd", "charged_usd", "share_percent", "estimated_usd"])
    for line in chargeback.lines:
        writer.writerow(
            [
                line.key,
                exact(line.cost),
                f"{line.charged:.2f}",
                _share(line, chargeback.total),
                exact(line.estimated),
            ]
        )
    return buffer.getvalue()


def render_markdown(chargeback: Chargeback) -> str:
    total = chargeback.total
    with_estimates = bool(chargeback.estimated_total)
    rows = [
        [line.key, usd(line.charged), exact(line.cost), f"{_share(line, total)}%"]
        + ([exact(line.estimated)] if with_estimates else [])
        for line in chargeback.lines
    ]
    rows.append(
        ["**total**", f"**{usd(chargeback.charged_total)}**", exact(total), "100.00%"]
        + ([exact(chargeback.estimated_total)] if with_estimates else [])
    )
    headers = [chargeback.by, "charged", "exact cost (USD)", "share"]
    note = (
        [
            f"Calls to models with no price are not charged: they are estimated at "
            f"{exact(chargeback.estimated_total)} USD more (column 'estimated').",
            "",
        ]
        if with_estimates
        else []
    )
    return "\n".join(
        [
            f"# Chargeback {chargeback.month.label} by {chargeback.by}",
            "",
            markdown_table(headers + (["estimated"] if with_estimates else []), rows),
            "",
            f"Charged amounts are in cents and add up to the month's total "
            f"{exact(total)} rounded half up to {usd(to_cents(total))}; the leftover cents "
            "go to the largest remainders.",
            "",
            *note,
        ]
    )


def render(chargeback: Chargeback, fmt: str) -> str:
    return render_csv(chargeback) if fmt == "csv" else render_markdown(chargeback)
