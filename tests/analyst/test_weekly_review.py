"""The weekly review's numbers against Python over the distinct events, its three
formats, and the HTML rendered in headless Chromium with its charts visible."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from collections import defaultdict
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from clickhouse_connect.driver.client import Client
from matplotlib import image
from matplotlib.backends.backend_agg import FigureCanvasAgg

from detectors.decomposition import FACTORS, NEW_SPEND, STOPPED
from streams.analyst import charts
from streams.analyst.periods import Period, iso_week
from streams.analyst.weekly_render import render, why_it_moved, write_report
from streams.analyst.weekly_review import WeeklyReview, build_weekly_review, start_weekly_review
from tests.analyst import ledger_data as data

D = Decimal
WEEK = iso_week("2026-W47")
PREVIOUS = iso_week("2026-W46")
CHROMIUM = "/usr/bin/chromium"
MATPLOTLIB_BLUE = (31, 119, 180)  # the first series colour of both charts


@pytest.fixture(scope="module")
def events(module_ch: Client) -> list[dict[str, Any]]:
    events = data.make_events()
    data.insert(module_ch, events, token="batch-1")
    data.insert(module_ch, events[::7], token="redelivered")  # must change nothing
    return events


@pytest.fixture(scope="module")
def review(module_ch: Client, events: list[dict[str, Any]]) -> WeeklyReview:
    return build_weekly_review(module_ch, WEEK)


def spend(events: list[dict[str, Any]], key: str, days: list[date]) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for e in events:
        if e["timestamp"].date() in days:
            totals[e[key]] += e["cost_usd"]
    return totals


def test_top_tenants_with_week_over_week_change(
    review: WeeklyReview, events: list[dict[str, Any]]
) -> None:
    current = spend(events, "tenant_id", WEEK.days)
    previous = spend(events, "tenant_id", PREVIOUS.days)
    expected = sorted(current, key=lambda t: -current[t])[:5]
    assert [c.key for c in review.top_tenants] == expected
    for change in review.top_tenants:
        assert (change.current, change.previous) == (current[change.key], previous[change.key])
    assert review.total == sum(current.values(), D(0))
    assert review.previous_total == sum(previous.values(), D(0))


def test_top_workflows(review: WeeklyReview, events: list[dict[str, Any]]) -> None:
    current = spend(events, "workflow_id", WEEK.days)
    assert {c.key: c.current for c in review.top_workflows} == current
    first = review.top_workflows[0]
    assert first.label == f"{first.key.removeprefix('wf-').title()} ({first.key})"


def test_the_spiking_tenant_is_listed_above_three_times_its_median(
    review: WeeklyReview, events: list[dict[str, Any]]
) -> None:
    tenant, day = data.SPIKE
    daily: dict[date, Decimal] = defaultdict(Decimal)
    for e in events:
        if e["tenant_id"] == tenant:
            daily[e["timestamp"].date()] += e["cost_usd"]
    median = data.median([daily[d] for d in PREVIOUS.days])
    spike = next(s for s in review.spikes if s.kind == "tenant" and s.key == tenant)
    assert (spike.peak_day, spike.peak_spend, spike.last_week_median) == (day, daily[day], median)
    assert spike.ratio > 3
    for other in review.spikes:
        assert other.peak_spend > 3 * other.last_week_median


def test_cost_per_successful_task(review: WeeklyReview, events: list[dict[str, Any]]) -> None:
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        if e["timestamp"].date() in WEEK.days:
            runs[e["workflow_run_id"]].append(e)
    expected: dict[str, list[Any]] = defaultdict(lambda: [0, 0, D(0)])
    for calls in runs.values():
        workflow = calls[0]["workflow_id"]
        last = max(calls, key=lambda e: e["timestamp"])
        expected[workflow][0] += 1
        expected[workflow][1] += int(data.successful(last))
        expected[workflow][2] += sum((e["cost_usd"] for e in calls), D(0))
    actual = {t.workflow_id: [t.runs, t.successful_runs, t.cost] for t in review.task_costs}
    assert actual == dict(expected)
    for task in review.task_costs:
        assert task.cost_per_successful_run == task.cost / task.successful_runs


def test_cheaper_model_of_the_same_provider(
    review: WeeklyReview, events: list[dict[str, Any]]
) -> None:
    week = [e for e in events if e["timestamp"].date() in WEEK.days]
    mini = data.PRICES[("openai", "gpt-4o-mini")]
    on_4o = [e for e in week if e["model"] == "gpt-4o" and e["workflow_id"] == "wf-summarize"]
    saving = sum((e["cost_usd"] for e in on_4o), D(0)) - sum(
        (
            mini.cost(
                e["input_tokens"],
                e["cached_tokens"],
                e["cache_write_tokens"],
                e["output_tokens"],
                e["reasoning_tokens"],
            ).total
            for e in on_4o
        ),
        D(0),
    )
    finding = next(
        f for f in review.cheaper_models if f.model == "gpt-4o" and f.workflow_id == "wf-summarize"
    )
    assert finding.alternative == "gpt-4o-mini"
    assert finding.savings == saving
    assert all(f.alternative != data.UNPRICED_MODEL[1] for f in review.cheaper_models)


def test_text_and_markdown_reports(review: WeeklyReview) -> None:
    text, charts = render(review, "table")
    assert charts == []
    assert text.startswith("Weekly review 2026-W47 (2026-11-16 – 2026-11-22)")
    for title in ("Top 5 tenants", "Top 5 workflows", "Cost per successful task", "Spend by model"):
        assert title in text
    assert "hooli" in text.split("median day")[1]
    markdown, _ = render(review, "md")
    assert markdown.startswith("# Weekly review 2026-W47")
    assert "| tenant | this week | last week | change | why it moved |" in markdown


def test_each_top_tenants_change_is_split_into_parts_that_sum_to_it(
    review: WeeklyReview, events: list[dict[str, Any]]
) -> None:
    """Why it moved (Shapley, detectors.decomposition) from the week's calls, retries,
    tokens and spend per model: the parts sum to the change to the cent. hooli ran ten
    times its runs on one day this week: its largest part is volume (more calls)."""
    for change in review.top_tenants:
        assert set(change.why) == set(FACTORS)
        change_cents = (change.current - change.previous).quantize(D("0.01"))
        assert sum(change.why.values()) == change_cents, change
    hooli = next(c for c in review.top_tenants if c.key == data.SPIKE[0])
    assert max(hooli.why, key=lambda factor: abs(hooli.why[factor])) == "volume"
    text, _ = render(review, "table")
    assert why_it_moved(hooli.why).startswith("volume +$") and why_it_moved(hooli.why) in text


def test_a_week_to_date_explains_its_change_from_the_same_days_of_last_week(
    module_ch: Client, events: list[dict[str, Any]]
) -> None:
    """A review of a week to date compares with the same weekdays a week earlier; why
    it moved is split from those days too, not from all of last week (the parts sum to
    the change to the cent)."""
    to_date = Period("2026-W47 to date", WEEK.start, WEEK.start + timedelta(days=2))
    review = build_weekly_review(module_ch, to_date)
    assert review.top_tenants
    for change in review.top_tenants:
        change_cents = (change.current - change.previous).quantize(D("0.01"))
        assert sum(change.why.values()) == change_cents, change


def test_a_tenant_new_this_week_shows_new_spend_and_one_gone_shows_stopped(
    module_ch: Client, events: list[dict[str, Any]]
) -> None:
    """The ledger starts on Friday of W44: every tenant's W44 spend is new (nothing in
    W43), one line, not split into volume and model mix. It ends on Sunday of W47:
    in W48 every tenant stopped."""
    first = build_weekly_review(module_ch, iso_week("2026-W44"))
    assert first.top_tenants
    text, _ = render(first, "table")
    for change in first.top_tenants:
        assert change.previous == 0 < change.current
        assert change.why == {NEW_SPEND: change.current.quantize(D("0.01"))}
        line = f"new spend: ${change.current:,.2f} (no spend in the previous period)"
        assert why_it_moved(change.why) == line and line in text
        assert "volume" not in text.split("Top 5 workflows")[0].split("why it moved")[-1]
    after = build_weekly_review(module_ch, iso_week("2026-W48"))
    assert after.top_tenants
    markdown, _ = render(after, "md")
    for change in after.top_tenants:
        assert change.current == 0 < change.previous
        assert change.why == {STOPPED: -change.previous.quantize(D("0.01"))}
        assert f"stopped: -${change.previous:,.2f}" in markdown


def test_an_empty_week_still_renders(module_ch: Client, events: list, tmp_path: Path) -> None:
    empty = build_weekly_review(module_ch, iso_week("2026-W20"))
    assert (empty.total, empty.top_tenants, empty.task_costs) == (0, [], [])
    assert "(none)" in render(empty, "table")[0]
    assert len(write_report(empty, "html", tmp_path)) == 3


def non_blank(png: np.ndarray) -> tuple[int, int]:
    """(distinct colours, pixels of the charts' first series colour) in an RGB(A) image."""
    pixels = (png[..., :3] * 255).round().astype(np.uint8).reshape(-1, 3)
    colours = len(np.unique(pixels, axis=0))
    blue = int(np.sum(np.all(np.abs(pixels.astype(int) - MATPLOTLIB_BLUE) <= 8, axis=1)))
    return colours, blue


def test_html_report_embeds_the_charts_and_writes_them_as_png(
    review: WeeklyReview, tmp_path: Path
) -> None:
    written = write_report(review, "html", tmp_path)
    assert [p.name for p in written] == [
        "weekly-2026-W47.html",
        "weekly-2026-W47-tenants.png",
        "weekly-2026-W47-models.png",
    ]
    html = written[0].read_text()
    inline = re.findall(r"src='data:image/png;base64,([^']+)'", html)
    assert len(inline) == 2
    for encoded, path in zip(inline, written[1:], strict=True):
        assert base64.b64decode(encoded) == path.read_bytes()
        colours, blue = non_blank(image.imread(path))
        assert colours > 20 and blue > 200, path.name


def test_a_report_drawn_while_the_review_is_read_is_the_finished_review_s(
    module_ch: Client, review: WeeklyReview, tmp_path: Path
) -> None:
    """`spendstream report weekly` draws the charts while the task-cost, price and
    estimate queries run (`start_weekly_review`): the same page and charts as from the
    finished review, in every format."""
    for fmt in ("table", "md", "html"):
        assert render(start_weekly_review(module_ch, WEEK), fmt) == render(review, fmt), fmt
    reading = start_weekly_review(module_ch, WEEK)
    assert (reading.days, reading.tenant_days, reading.model_days) == (
        review.days,
        review.tenant_days,
        review.model_days,
    )
    assert reading.result() == review
    written = write_report(start_weekly_review(module_ch, WEEK), "html", tmp_path)
    assert [path.read_bytes() for path in written] == [
        path.read_bytes() for path in write_report(review, "html", tmp_path / "finished")
    ]


@pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="chromium not installed (apt-get install chromium)"
)
def test_html_report_renders_in_headless_chromium(review: WeeklyReview, tmp_path: Path) -> None:
    report = write_report(review, "html", tmp_path / "report")[0]
    screenshot = tmp_path / "screenshot.png"
    subprocess.run(
        [
            shutil.which("chromium") or CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={screenshot}",
            "--window-size=1200,1600",
            report.resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=90,
    )
    colours, blue = non_blank(image.imread(screenshot))
    # A blank or unstyled page has a handful of colours; the charts bring hundreds
    # and a large area of their first series' blue.
    assert colours > 100
    assert blue > 500


def test_chart_ticks_are_true_to_their_gridlines_and_legends_keep_full_names() -> None:
    days = [date(2026, 11, 9) + timedelta(days=n) for n in range(14)]
    # Up to 17.50: gridlines every 2.50, which "$12"/"$18" labels used to misstate.
    amounts = [Decimal("12.50"), Decimal("17.50"), Decimal("3.25"), Decimal("8")] * 3
    long_name = "Customer Support Summarizer (wf-support-summary-7)"
    series = {
        long_name: [*amounts, Decimal(1), Decimal(2)],
        "claude-sonnet-4-5": [Decimal(5)] * 14,
    }
    for build in (charts.tenant_spend_figure, charts.model_spend_figure):
        figure = build(days, series, date(2026, 11, 16))
        FigureCanvasAgg(figure).draw()
        (axes,) = figure.axes
        ticks = axes.get_yticks()
        labels = [label.get_text() for label in axes.get_yticklabels()]
        assert len(labels) == len(ticks) > 2
        for tick, label in zip(ticks, labels, strict=True):
            assert Decimal(label.removeprefix("$").replace(",", "")) == Decimal(str(tick)), label
        if build is charts.tenant_spend_figure:  # the stacked bars reach 22.50: steps of 5
            assert "$12.50" in labels and "$17.50" in labels, labels
        legend = [text.get_text() for text in axes.get_legend().get_texts()]
        assert long_name in legend and "claude-sonnet-4-5" in legend
        # The plot spans the figure's width: the legend sits below it, not beside it.
        assert axes.get_position().width > 0.85
    whole = charts.tenant_spend_figure(days, {"a": [Decimal(10 * n) for n in range(14)]}, days[7])
    FigureCanvasAgg(whole).draw()
    assert all("." not in label.get_text() for label in whole.axes[0].get_yticklabels())
