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
from matplotlib.ticker import Formatter

MAX_STACKED_SERIES = 7
# The page's width (weekly_render's HTML is 1100 px wide), at 100 dpi.
FIGURE_SIZE = (11.0, 4.8)
# Fixed margins instead of tight_layout(), which lays every text out once more before
# the real drawing (about a sixth of a chart's time): room on the left for the dollar
# ticks, below for the days and a legend of full names in LEGEND_COLUMNS columns.
MARGINS = {"left": 0.07, "right": 0.98, "bottom": 0.3, "top": 0.92}
LEGEND_COLUMNS = 4


class DollarTicks(Formatter):
    """Every tick with the decimals its gridline needs: 12.50 is "$12.50", never "$12";
    whole amounts without cents when every tick is whole."""

    def format_ticks(self, values: Sequence[float]) -> list[str]:
        whole = all(float(value).is_integer() for value in values)
        return [f"${value:,.0f}" if whole else f"${value:,.2f}" for value in values]

    def __call__(self, value: float, pos: int | None = None) -> str:
        return self.format_ticks([value])[0]


def tenant_spend_chart(
    days: Sequence[date], series: dict[str, list[Decimal]], week_start: date
) -> bytes:
    """Lines: spend per day for each top tenant, last week shaded for comparison."""
    return _png(tenant_spend_figure(days, series, week_start))


def tenant_spend_figure(
    days: Sequence[date], series: dict[str, list[Decimal]], week_start: date
) -> Figure:
    figure = Figure(figsize=FIGURE_SIZE, dpi=100)
    axes = figure.subplots()
    positions = list(range(len(days)))
    for label, amounts in series.items():
        axes.plot(
            positions, [float(amount) for amount in amounts], marker="o", linewidth=2, label=label
        )
    _shade_previous_week(axes, days, week_start)
    _finish(axes, days, "Spend per day, top tenants")
    return figure


def model_spend_chart(
    days: Sequence[date], series: dict[str, list[Decimal]], week_start: date
) -> bytes:
    """Stacked bars: spend per day by model; the smallest models are grouped as "other"."""
    return _png(model_spend_figure(days, series, week_start))


def model_spend_figure(
    days: Sequence[date], series: dict[str, list[Decimal]], week_start: date
) -> Figure:
    spent = {label: amounts for label, amounts in series.items() if any(amounts)}
    ranked = sorted(spent.items(), key=lambda item: -sum(item[1]))
    shown = dict(ranked[: MAX_STACKED_SERIES - 1])
    rest = ranked[MAX_STACKED_SERIES - 1 :]
    if rest:
        shown["other"] = [
            sum(amounts, Decimal(0)) for amounts in zip(*(a for _, a in rest), strict=True)
        ]
    figure = Figure(figsize=FIGURE_SIZE, dpi=100)
    axes = figure.subplots()
    positions = list(range(len(days)))
    bottom = [0.0] * len(days)
    for label, amounts in shown.items():
        heights = [float(amount) for amount in amounts]
        axes.bar(positions, heights, bottom=bottom, label=label, width=0.8)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    _shade_previous_week(axes, days, week_start)
    _finish(axes, days, "Spend per day by model")
    return figure


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
    axes.figure.subplots_adjust(**MARGINS)
    axes.set_title(title, loc="left", fontsize=12, fontweight="bold")
    axes.set_xticks(
        range(len(days)), [day.strftime("%a %d") for day in days], fontsize=8, rotation=45
    )
    axes.yaxis.set_major_formatter(DollarTicks())
    axes.set_xlim(-0.5, len(days) - 0.5)
    axes.set_ylim(bottom=0)
    axes.grid(axis="y", alpha=0.3)
    axes.spines[["top", "right"]].set_visible(False)
    handles, labels = axes.get_legend_handles_labels()
    if handles:
        # Below the plot, full names in columns: the plot keeps the page's width.
        axes.legend(
            handles,
            labels,
            fontsize=9,
            loc="upper left",
            bbox_to_anchor=(0.0, -0.2),
            ncol=LEGEND_COLUMNS,
            frameon=False,
        )


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    # zlib level 1: the same pixels, a fifth of level 6's encoding time, a larger file.
    FigureCanvasAgg(figure).print_png(buffer, pil_kwargs={"compress_level": 1})
    return buffer.getvalue()
