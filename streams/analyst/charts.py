"""The weekly review's charts as PNG bytes.

Figures are built with matplotlib's object API (no pyplot): no global state, no
display needed, and Agg renders the PNG. Amounts become floats here only to be
drawn.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import date
from decimal import Decimal

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

MAX_STACKED_SERIES = 7
# Fixed margins instead of tight_layout(), which lays every text out once more before
# the real drawing (about a sixth of a chart's time): room on the left for the dollar
# ticks, below for the rotated days, on the right for a legend of LEGEND_CHARS-long labels.
MARGINS = {"left": 0.09, "right": 0.76, "bottom": 0.17, "top": 0.9}
LEGEND_CHARS = 24
_DOLLARS = FuncFormatter(lambda value, _: f"${value:,.0f}" if value >= 10 else f"${value:,.2f}")


def tenant_spend_chart(
    days: Sequence[date], series: dict[str, list[Decimal]], week_start: date
) -> bytes:
    """Lines: spend per day for each top tenant, last week shaded for comparison."""
    figure = Figure(figsize=(9, 4), dpi=100)
    axes = figure.subplots()
    positions = list(range(len(days)))
    for label, amounts in series.items():
        axes.plot(
            positions, [float(amount) for amount in amounts], marker="o", linewidth=2, label=label
        )
    _shade_previous_week(axes, days, week_start)
    _finish(axes, days, "Spend per day, top tenants")
    return _png(figure)


def model_spend_chart(
    days: Sequence[date], series: dict[str, list[Decimal]], week_start: date
) -> bytes:
    """Stacked bars: spend per day by model; the smallest models are grouped as "other"."""
    spent = {label: amounts for label, amounts in series.items() if any(amounts)}
    ranked = sorted(spent.items(), key=lambda item: -sum(item[1]))
    shown = dict(ranked[: MAX_STACKED_SERIES - 1])
    rest = ranked[MAX_STACKED_SERIES - 1 :]
    if rest:
        shown["other"] = [
            sum(amounts, Decimal(0)) for amounts in zip(*(a for _, a in rest), strict=True)
        ]
    figure = Figure(figsize=(9, 4), dpi=100)
    axes = figure.subplots()
    positions = list(range(len(days)))
    bottom = [0.0] * len(days)
    for label, amounts in shown.items():
        heights = [float(amount) for amount in amounts]
        axes.bar(positions, heights, bottom=bottom, label=label, width=0.8)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    _shade_previous_week(axes, days, week_start)
    _finish(axes, days, "Spend per day by model")
    return _png(figure)


def _shade_previous_week(axes: Axes, days: Sequence[date], week_start: date) -> None:
    before = [index for index, day in enumerate(days) if day < week_start]
    if before:
        axes.axvspan(-0.5, before[-1] + 0.5, color="#eeeeee", zorder=0, label="_last week")
        axes.text(
            before[-1] / 2,
            0.98,
            "last week",
            transform=axes.get_xaxis_transform(),
            ha="center",
            va="top",
            color="#777777",
            fontsize=8,
        )


def _finish(axes: Axes, days: Sequence[date], title: str) -> None:
    axes.set_title(title, loc="left", fontsize=12, fontweight="bold")
    axes.set_xticks(
        range(len(days)), [day.strftime("%a %d") for day in days], fontsize=8, rotation=45
    )
    axes.yaxis.set_major_formatter(_DOLLARS)
    axes.set_xlim(-0.5, len(days) - 0.5)
    axes.set_ylim(bottom=0)
    axes.grid(axis="y", alpha=0.3)
    axes.spines[["top", "right"]].set_visible(False)
    handles, labels = axes.get_legend_handles_labels()
    if handles:
        axes.legend(
            handles,
            [legend_label(label) for label in labels],
            fontsize=8,
            loc="upper left",
            bbox_to_anchor=(1.0, 1.0),
            frameon=False,
        )


def legend_label(label: str) -> str:
    """Long labels keep their start and their end, where the id is."""
    if len(label) <= LEGEND_CHARS:
        return label
    head = (LEGEND_CHARS - 1) // 2
    return f"{label[:head]}…{label[head + 1 - LEGEND_CHARS :]}"


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.subplots_adjust(**MARGINS)
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()
