"""A newcomer's first minutes: what `make run` starts (`spendstream dev --simulate
--backfill …`), on a terminal (a pty), shows within five minutes a spend figure above
zero, an alert line with its cause, and a weekly review with spend in it.

A shorter history than `make run`'s two weeks (three days: enough for the detectors'
day of baseline) keeps the test to a minute or two on a shared machine."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from streams.embedded.processes import stop
from streams.ports import free_port
from tests.helpers.stack import spendstream

pytestmark = pytest.mark.integration

FIVE_MINUTES = 300.0
SPEND_TODAY = re.compile(r"spend today \$([\d,]+\.\d\d)")
ALERT_WITH_CAUSE = re.compile(r"ALERT \[(WARNING|CRITICAL)\] \S+ \S+: .* cause: ")


def test_make_run_shows_spend_an_alert_with_its_cause_and_a_weekly_review(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    leader, follower = pty.openpty()
    dev = subprocess.Popen(
        [
            *(sys.executable, "-m", "streams.cli", "dev", "--simulate", "--rate", "0.3"),
            *("--backfill", "3d", "--data-dir", str(data_dir), "--port", str(free_port())),
        ],
        stdin=follower,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    screen = ""
    spend = alert = None
    try:
        deadline = time.monotonic() + FIVE_MINUTES
        while time.monotonic() < deadline and not (spend and alert):
            ready, _, _ = select.select([leader], [], [], 1.0)
            if ready:
                try:
                    screen += os.read(leader, 65536).decode(errors="replace")
                except OSError:
                    break  # dev exited
            spends = [Decimal(m.replace(",", "")) for m in SPEND_TODAY.findall(screen)]
            spend = next((s for s in reversed(spends) if s > 0), None)
            alert = ALERT_WITH_CAUSE.search(screen)
        assert dev.poll() is None, screen[-2000:]
        assert spend is not None and spend > 0, screen[-2000:]
        assert alert is not None, screen[-2000:]
        # The weekly review, through the running stack, this week to date.
        review = spendstream("report", "weekly", "--data-dir", str(data_dir))
        assert review.returncode == 0, review.stderr.decode()
        text = review.stdout.decode()
        assert re.match(r"Weekly review \d{4}-W\d\d", text), text[:200]
        total = re.search(r"Total spend \$([\d,]+\.\d\d)", text)
        assert total and Decimal(total.group(1).replace(",", "")) > 0, text[:500]
    finally:
        stop(dev, timeout=60)  # SIGTERM: dev stops its children in order, as on Ctrl-C
        os.close(leader)
    # Alerts on the terminal are plain lines; the worker's log has no escape codes.
    assert "\x1b[?25" not in (data_dir / "worker.log").read_text(errors="replace")

    # A second `make run` on the same data dir keeps its history and adds none.
    again = subprocess.Popen(
        [
            *(sys.executable, "-m", "streams.cli", "dev", "--rate", "0.3", "--backfill", "3d"),
            *("--data-dir", str(data_dir), "--port", str(free_port())),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert again.stdout is not None
        lines = [again.stdout.readline().decode() for _ in range(2)]
    finally:
        stop(again, timeout=60)
    assert "the ledger already holds" in lines[1] and lines[1].rstrip().endswith("no backfill")
