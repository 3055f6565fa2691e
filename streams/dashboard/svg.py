"""The spend chart as SVG, drawn on the server from the series endpoint's data.

Server-rendered SVG rather than a chart library: the page loads no third-party
script (nothing to vendor, license or keep patched, nothing fetched at run time),
the picture a test checks is the one the browser shows, and one stacked-area chart
with a time axis is a hundred lines. Amounts stay Decimal until they become pixels.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from html import escape
from typing import Any

from streams.analyst.money import ZERO, usd

WIDTH, HEIGHT = 960, 300
LEFT, RIGHT, TOP, BOTTOM = 70, 34, 12, 64
# Colour-blind-safe (Okabe-Ito), then grey for "others".
COLOURS = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442")
OTHER = "#999999"


def nice_ceiling(value: Decimal) -> Decimal:
    """The smallest 1, 2, 2.5 or 5 x 10^n at least `value` (the y axis' top)."""
    if value <= 0:
        return Decimal(1)
    exponent = value.adjusted()
    for step in (1, 2, Decimal("2.5"), 5, 10):
        top = Decimal(step).scaleb(exponent)
        if top >= value:
            return top
    return Decimal(10).scaleb(exponent)


def stacked_area(data: dict[str, Any]) -> str:
    buckets = [datetime.fromisoformat(b) for b in data["buckets"]]
    series = data["series"]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    count = len(buckets)
    stacks: list[list[Decimal]] = []
    running = [ZERO] * count
    for entry in series:
        running = [r + Decimal(v) for r, v in zip(running, entry["values"], strict=True)]
        stacks.append(running)
    top = nice_ceiling(max(running, default=ZERO))

    def x(n: int) -> float:
        return LEFT + (plot_w * n / (count - 1) if count > 1 else plot_w / 2)

    def y(amount: Decimal) -> float:
        return TOP + plot_h * float(1 - amount / top)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="spend over time by {escape(data["by"])}" '
        f'font-family="system-ui, sans-serif" font-size="11">'
    ]
    for tick in range(5):
        amount = top * tick / 4
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(amount):.1f}" y2="{y(amount):.1f}" '
            f'stroke="#e4e4e4"/><text x="{LEFT - 6}" y="{y(amount) + 4:.1f}" '
            f'text-anchor="end" fill="#555">{usd(amount)}</text>'
        )
    below = [ZERO] * count
    for n, (entry, stack) in enumerate(zip(series, stacks, strict=True)):
        colour = OTHER if entry["key"] is None else COLOURS[n % len(COLOURS)]
        upper = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(stack))
        lower = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in reversed(list(enumerate(below))))
        total = sum((Decimal(v) for v in entry["values"]), ZERO)
        parts.append(
            f'<polygon points="{upper} {lower}" fill="{colour}" fill-opacity="0.85" '
            f'stroke="{colour}"><title>{escape(entry["label"])}: {usd(total)}</title></polygon>'
        )
        below = stack
    hourly = data["grain"] == "hour"
    every = max(1, count // 12)
    for n, bucket in enumerate(buckets):
        if n % every:
            continue
        label = f"{bucket:%H:%M}" if hourly else f"{bucket:%a %d}"
        if hourly and bucket.hour < every:
            label = f"{bucket:%b %d}"  # midnight names the day
        parts.append(
            f'<text x="{x(n):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" '
            f'fill="#555">{label}</text>'
        )
    parts.append(
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" y2="{TOP + plot_h}" '
        f'stroke="#888"/><text x="{WIDTH - RIGHT}" y="{HEIGHT - BOTTOM + 30}" '
        f'text-anchor="end" fill="#777">event time, UTC</text>'
    )
    legend_x = float(LEFT)
    for n, entry in enumerate(series):
        colour = OTHER if entry["key"] is None else COLOURS[n % len(COLOURS)]
        label = escape(entry["label"][:32])
        parts.append(
            f'<rect x="{legend_x}" y="{HEIGHT - 18}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{legend_x + 14}" y="{HEIGHT - 9}" fill="#333">{label}</text>'
        )
        legend_x += 24 + 6.2 * len(entry["label"][:32])
    if not series:
        parts.append(
            f'<text x="{LEFT + plot_w / 2}" y="{TOP + plot_h / 2}" text-anchor="middle" '
            f'fill="#777">no spend in this period</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
