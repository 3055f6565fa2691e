"""The weekly review as a plain-text table, Markdown, or HTML with inline charts."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from detectors.decomposition import NEW_SPEND, STOPPED
from streams.analyst import charts
from streams.analyst.money import percent_change, usd
from streams.analyst.tables import Row, html_table, markdown_table, text_table
from streams.analyst.weekly_review import SPIKE_FACTOR, TOP_N, ReviewReading, WeeklyReview

FORMATS = ("table", "md", "html")
SUFFIX = {"table": "txt", "md": "md", "html": "html"}
MAX_ROWS = 15


@dataclass(frozen=True)
class Section:
    title: str
    note: str
    headers: Row
    rows: list[Row]


@dataclass(frozen=True)
class Chart:
    file_name: str
    title: str
    png: bytes


def title(review: WeeklyReview) -> str:
    week, previous = review.week, review.previous
    if len(week.days) < 7:
        return (
            f"Weekly review {week.label} to date ({week.start} – {week.end}), "
            f"compared with the same days of {previous.label}"
        )
    return f"Weekly review {week.label} ({week.start} – {week.end}), compared with {previous.label}"


def summary(review: WeeklyReview) -> str:
    text = (
        f"Total spend {usd(review.total)} "
        f"({percent_change(review.total, review.previous_total)} week over week, "
        f"last week {usd(review.previous_total)})."
    )
    if review.estimated:
        text += (
            f" Calls to {len(review.estimated)} model(s) with no price are estimated at "
            f"{usd(review.estimated_total)} more (not in the total; see below)."
        )
    return text


def why_it_moved(parts: dict[str, Decimal], shown: int = 2) -> str:
    """The largest parts of a change, e.g. "volume +$12.00, model mix +$3.10"; a change
    from or to no spend as one line."""
    if NEW_SPEND in parts:
        return f"new spend: {usd(parts[NEW_SPEND])} (no spend in the previous period)"
    if STOPPED in parts:
        return f"stopped: -{usd(abs(parts[STOPPED]))}"
    largest = sorted((p for p in parts.items() if p[1]), key=lambda p: -abs(p[1]))[:shown]
    return ", ".join(
        f"{name.replace('_', ' ')} {'+' if part > 0 else '-'}{usd(abs(part))}"
        for name, part in largest
    )


def sections(review: WeeklyReview) -> list[Section]:
    change_headers = ["", "this week", "last week", "change"]

    def change_rows(changes: list) -> list[Row]:
        return [
            [c.label, usd(c.current), usd(c.previous), percent_change(c.current, c.previous)]
            for c in changes
        ]

    return [
        Section(
            f"Top {TOP_N} tenants by spend",
            "Why it moved: the change split into volume, retries, model mix, tokens per "
            "call, unit price and cache-hit rate (Shapley decomposition; the parts sum "
            "to the change), the two largest shown; a tenant with no spend in one of "
            "the weeks shows one line, new spend or stopped.",
            ["tenant", *change_headers[1:], "why it moved"],
            [
                [*row, why_it_moved(c.why)]
                for row, c in zip(change_rows(review.top_tenants), review.top_tenants, strict=True)
            ],
        ),
        Section(
            f"Top {TOP_N} workflows by spend",
            "",
            ["workflow", *change_headers[1:]],
            change_rows(review.top_workflows),
        ),
        Section(
            f"Above {SPIKE_FACTOR}× last week's median day",
            "Tenants and workflows with at least one day this week above "
            f"{SPIKE_FACTOR}× their median daily spend of last week.",
            ["", "name", "days above", "peak day", "peak spend", "last-week median", "× median"],
            [
                [
                    spike.kind,
                    spike.label,
                    str(spike.days_above),
                    spike.peak_day.strftime("%a %Y-%m-%d"),
                    usd(spike.peak_spend),
                    usd(spike.last_week_median),
                    f"{spike.ratio:.1f}",
                ]
                for spike in review.spikes[:MAX_ROWS]
            ],
        ),
        Section(
            "Cost per successful task",
            "A task is a workflow run; it succeeded when its last call was 2xx. "
            "All the workflow's spend, failed runs included, is divided by its successful runs.",
            ["workflow", "runs", "successful", "success rate", "spend", "per successful run"],
            [
                [
                    task.label,
                    f"{task.runs:,}",
                    f"{task.successful_runs:,}",
                    f"{Decimal(100) * task.successful_runs / task.runs:.1f}%",
                    usd(task.cost),
                    _per_run(task.cost_per_successful_run),
                ]
                for task in review.task_costs[:MAX_ROWS]
            ],
        ),
        Section(
            "Spend by model",
            "",
            ["model", "this week", "last week", "change", "share"],
            [
                [
                    model.label,
                    usd(model.current),
                    usd(model.previous),
                    percent_change(model.current, model.previous),
                    f"{Decimal(100) * model.current / review.total:.1f}%" if review.total else "–",
                ]
                for model in review.models
                if model.current or model.previous
            ],
        ),
        Section(
            "Cheaper model of the same provider, same token counts",
            "What each workflow's tokens would have cost on the cheapest other model of "
            "the same provider priced that week. A hint to test, not a quality comparison.",
            ["workflow", "model", "spend", "cheaper model", "would cost", "saving"],
            [
                [
                    finding.label,
                    f"{finding.provider}/{finding.model}",
                    usd(finding.cost),
                    f"{finding.provider}/{finding.alternative}",
                    usd(finding.alternative_cost),
                    usd(finding.savings),
                ]
                for finding in review.cheaper_models[:MAX_ROWS]
            ],
        ),
        *_estimated_section(review),
    ]


def _estimated_section(review: WeeklyReview) -> list[Section]:
    if not review.estimated:
        return []
    return [
        Section(
            "Models with no price (estimated)",
            "Calls this week to models neither the pricing file nor the catalog prices, "
            "estimated from the closest priced model of the same family (docs/pricing.md). "
            "Add them to the pricing file and run `spendstream reprice`.",
            ["model", "calls", "input tokens", "output tokens", "estimated", "estimated as"],
            [
                [
                    f"{model.provider}/{model.model}",
                    f"{model.requests:,}",
                    f"{model.input_tokens:,}",
                    f"{model.output_tokens:,}",
                    usd(model.estimated),
                    model.estimate_source.split(" ", 1)[0].removeprefix("estimate:"),
                ]
                for model in review.estimated[:MAX_ROWS]
            ],
        ),
    ]


def _per_run(amount: Decimal | None) -> str:
    if amount is None:
        return "–"
    return f"${amount:,.4f}" if amount < 1 else usd(amount)


def build_charts(review: WeeklyReview | ReviewReading) -> list[Chart]:
    label = review.week.label
    return [
        Chart(
            f"weekly-{label}-tenants.png",
            "Spend per day, top tenants",
            charts.tenant_spend_chart(review.days, review.tenant_days, review.week.start),
        ),
        Chart(
            f"weekly-{label}-models.png",
            "Spend per day by model",
            charts.model_spend_chart(review.days, review.model_days, review.week.start),
        ),
    ]


def render_text(review: WeeklyReview) -> str:
    parts = [title(review), summary(review)]
    for section in sections(review):
        parts.append(f"\n{section.title}\n{'=' * len(section.title)}")
        if section.note:
            parts.append(section.note)
        parts.append(text_table(section.headers, section.rows))
    return "\n".join(parts) + "\n"


def render_markdown(review: WeeklyReview) -> str:
    parts = [f"# {title(review)}", "", summary(review)]
    for section in sections(review):
        parts += ["", f"## {section.title}", ""]
        if section.note:
            parts += [section.note, ""]
        parts.append(markdown_table(section.headers, section.rows))
    return "\n".join(parts) + "\n"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; max-width: 1100px; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin-top: 2rem; }
table { border-collapse: collapse; font-size: 0.9rem; }
th, td { padding: 0.25rem 0.75rem; border-bottom: 1px solid #ddd; text-align: left; }
th.num, td.num { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #555; font-size: 0.85rem; } .charts img { width: 100%; }
"""


def render_html(review: WeeklyReview, chart_images: list[Chart]) -> str:
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title(review))}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title(review))}</h1><p>{html.escape(summary(review))}</p>",
        "<div class='charts'>",
    ]
    for chart in chart_images:
        encoded = base64.b64encode(chart.png).decode("ascii")
        parts.append(
            f"<img alt='{html.escape(chart.title)}' src='data:image/png;base64,{encoded}'>"
        )
    parts.append("</div>")
    for section in sections(review):
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.note:
            parts.append(f"<p class='note'>{html.escape(section.note)}</p>")
        parts.append(html_table(section.headers, section.rows))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def render(review: WeeklyReview | ReviewReading, fmt: str) -> tuple[str, list[Chart]]:
    """The report text and, for HTML, the charts it embeds. Given a review still being
    read, the charts are drawn while its last queries run."""
    chart_images = build_charts(review) if fmt == "html" else []
    if isinstance(review, ReviewReading):
        review = review.result()
    if fmt == "table":
        return render_text(review), []
    if fmt == "md":
        return render_markdown(review), []
    return render_html(review, chart_images), chart_images


def write_report(review: WeeklyReview | ReviewReading, fmt: str, out_dir: Path) -> list[Path]:
    """Write the report (and for HTML its charts as PNG files next to it)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text, chart_images = render(review, fmt)
    report = out_dir / f"weekly-{review.week.label}.{SUFFIX[fmt]}"
    report.write_text(text)
    written = [report]
    for chart in chart_images:
        path = out_dir / chart.file_name
        path.write_bytes(chart.png)
        written.append(path)
    return written
