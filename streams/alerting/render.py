"""Human wording shared by the Slack, PagerDuty and console notifiers."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from schemas.alert import Alert, to_jsonable

CAUSE_LABELS = {
    "model_substitution": "Model substitution",
    "prompt_expansion": "Prompt expansion",
    "retry_storm": "Retry storm",
    "genuine_adoption": "Genuine adoption",
    "unexplained": "Unexplained",
}

# Evidence keys shown elsewhere in the message, not as supporting numbers.
CONTEXT_KEYS = {
    "cause",
    "cause_explanation",
    "cause_ratios",
    "baseline",
    "unit",
    "tenant_id",
    "team_id",
    "workflow_id",
    "query",
}


def format_amount(value: Decimal | None, unit: str) -> str:
    """`$1,234.57` for dollars (more digits below a dollar, so $0.0042 is not $0.00)."""
    if value is None:
        return "n/a"
    if unit != "usd":
        # Trailing zeros go: an alert read back from ClickHouse has 18 decimal places.
        return f"{value.normalize():,f}"
    places = Decimal("0.01") if abs(value) >= 1 else Decimal("0.0001")
    return f"${value.quantize(places, rounding=ROUND_HALF_UP):,}"


def ratio(value: Decimal, against: Decimal | None) -> str | None:
    if against is None or against <= 0:
        return None
    return f"{(value / against).quantize(Decimal('0.1'), rounding=ROUND_HALF_UP)}x"


def cause_label(cause: str) -> str:
    if not cause:
        return "not classified"
    return CAUSE_LABELS.get(cause, cause.replace("_", " ").capitalize())


def _shown(name: str, value: Any) -> str:
    if isinstance(value, Decimal) and name.endswith("_usd"):
        return format_amount(value, "usd")
    if isinstance(value, float):
        return f"{value:.4g}"
    shown = to_jsonable(value)
    return shown if isinstance(shown, str) else json.dumps(shown, separators=(",", ":"))


def cause_ratios(alert: Alert) -> list[tuple[str, str]]:
    """The spike-cause classifier's window/baseline ratios, e.g. ("requests", "9.8x")."""
    ratios = alert.evidence.get("cause_ratios")
    if not isinstance(ratios, dict):
        return []
    out = []
    for name, value in ratios.items():
        try:
            out.append((str(name), f"{float(value):.3g}x"))
        except (TypeError, ValueError):
            out.append((str(name), str(value)))
    return out


def supporting_evidence(alert: Alert, limit: int = 8) -> list[tuple[str, str]]:
    """Evidence entries not shown elsewhere, formatted for people."""
    items = [
        (name, _shown(name, value))
        for name, value in alert.evidence.items()
        if name not in CONTEXT_KEYS
    ]
    return items[:limit]


def format_time(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "n/a"


def format_window(alert: Alert) -> str:
    start, end = alert.window_start, alert.window_end
    if start.date() == end.date():
        return f"{start:%Y-%m-%d %H:%M}-{end:%H:%M} UTC"
    return f"{format_time(start)} - {format_time(end)}"


def who(alert: Alert) -> dict[str, str]:
    return {
        "Tenant": alert.tenant_id or "-",
        "Team": alert.team_id or "-",
        "Workflow": alert.workflow_id or "-",
    }


def one_line(alert: Alert) -> str:
    if alert.state == "resolved":
        return f"[RESOLVED] {alert.detector} {alert.key}: {alert.summary}"
    explanation = alert.evidence.get("cause_explanation")
    cause = f" cause: {cause_label(alert.cause)}" if alert.cause else ""
    cause += f" ({explanation})." if cause and explanation else ("." if cause else "")
    # A snoozed state was held back, not paged: the terminal must not read as a page.
    held = "SNOOZED " if alert.state == "snoozed" else ""
    return (
        f"[{held}{alert.severity.upper()}] {alert.detector} {alert.key}: {alert.summary} "
        f"({format_amount(alert.value, alert.unit)} vs threshold "
        f"{format_amount(alert.threshold, alert.unit)}).{cause}"
    )


def details(alert: Alert) -> dict[str, Any]:
    """Evidence plus the alert's own figures, JSON-safe: PagerDuty custom_details."""
    out: dict[str, Any] = to_jsonable(alert.evidence)
    out.update(
        to_jsonable(
            {
                "detector": alert.detector,
                "key": alert.key,
                "tenant_id": alert.tenant_id,
                "team_id": alert.team_id,
                "workflow_id": alert.workflow_id,
                "value": alert.value,
                "threshold": alert.threshold,
                "baseline": alert.baseline,
                "unit": alert.unit,
                "cause": alert.cause,
                "window_start": alert.window_start,
                "window_end": alert.window_end,
                "query": alert.query,
            }
        )
    )
    return out
