from datetime import UTC, datetime, timedelta, timezone

import pytest

from detectors.history import HourlyHistory, epoch_hour, hour_start


def test_epoch_hour_buckets_by_utc_event_time() -> None:
    ten = datetime(2024, 5, 6, 10, tzinfo=UTC)
    assert epoch_hour(ten) == epoch_hour(ten + timedelta(minutes=59, seconds=59.999999))
    assert epoch_hour(ten - timedelta(microseconds=1)) == epoch_hour(ten) - 1
    # naive means UTC; other offsets are converted
    assert epoch_hour(datetime(2024, 5, 6, 10, 30)) == epoch_hour(ten)
    berlin = timezone(timedelta(hours=2))
    assert epoch_hour(datetime(2024, 5, 6, 12, 30, tzinfo=berlin)) == epoch_hour(ten)
    assert hour_start(epoch_hour(ten)) == ten


def test_keeps_only_the_retention_window_behind_the_newest_hour() -> None:
    history: HourlyHistory[int] = HourlyHistory(retention_hours=192, max_keys=10)
    for h in range(400):
        history.put("k", h, h)
    kept = history.between("k", 0, 1000)
    assert len(kept) == 192
    assert kept[0] == (400 - 192, 400 - 192)
    history.put("k", 10, -1)  # far older than the retention: ignored
    assert history.get("k", 10) is None


def test_put_replaces_the_hour_value() -> None:
    history: HourlyHistory[str] = HourlyHistory(retention_hours=5, max_keys=10)
    history.put("k", 7, "a")
    history.put("k", 7, "b")
    assert history.between("k", 0, 100) == [(7, "b")]


def test_evicts_the_least_recently_written_key() -> None:
    history: HourlyHistory[int] = HourlyHistory(retention_hours=5, max_keys=2)
    assert history.put("a", 1, 1) is None
    assert history.put("b", 1, 1) is None
    history.put("a", 2, 2)  # "a" is now the most recent
    assert history.put("c", 1, 1) == "b"
    assert "a" in history and "c" in history and "b" not in history
    assert len(history) == 2


def test_rejects_unbounded_configuration() -> None:
    with pytest.raises(ValueError):
        HourlyHistory(retention_hours=0, max_keys=1)
