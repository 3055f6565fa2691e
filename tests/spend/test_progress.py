"""`CostedProgress`: the spend agent counts each costed partition without a hole, and
reads a partition again from where it stopped when the consumer skips or stalls."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from streams.spend.progress import CostedProgress


def at(partition: int, offset: int) -> Any:
    return SimpleNamespace(message=SimpleNamespace(partition=partition, offset=offset))


def positions(events: list[Any]) -> list[tuple[int, int]]:
    return [(e.message.partition, e.message.offset) for e in events]


def test_a_partition_without_a_record_takes_what_comes_first() -> None:
    admitted = CostedProgress({}).admit([at(0, 16), at(1, 3), at(0, 17)])
    assert positions(admitted.events) == [(0, 16), (1, 3), (0, 17)]
    assert admitted.rewind == {}


def test_offsets_before_the_recorded_one_are_counted_already() -> None:
    # After table recovery Faust delivers records from before and after its seek: the
    # same offsets twice in one list.
    progress = CostedProgress({"0": 18})
    events = [at(0, 16), at(0, 17), at(0, 18), at(0, 16), at(0, 19)]
    admitted = progress.admit(events)
    assert positions(admitted.events) == [(0, 18), (0, 19)]
    assert len(events) - len(admitted.events) == 3
    assert admitted.rewind == {}


def test_a_skipped_offset_holds_back_the_rest_and_reads_the_partition_again() -> None:
    progress = CostedProgress({"0": 30, "1": 5})
    admitted = progress.admit([at(0, 30), at(1, 5), at(0, 33), at(0, 34), at(1, 6)])
    assert positions(admitted.events) == [(0, 30), (1, 5), (1, 6)]
    assert admitted.rewind == {0: 31}


def test_a_hole_filled_later_in_the_same_list_needs_no_second_read() -> None:
    # Records from before a seek, then the same partition again from the expected offset.
    progress = CostedProgress({"0": 10})
    admitted = progress.admit([at(0, 12), at(0, 10), at(0, 11), at(0, 12)])
    assert positions(admitted.events) == [(0, 10), (0, 11), (0, 12)]
    assert admitted.rewind == {}


def test_reached_is_the_next_offset_after_the_last_counted_of_each_partition() -> None:
    assert CostedProgress.reached([at(0, 4), at(3, 9), at(0, 5)]) == {0: 6, 3: 10}


def test_a_partition_behind_its_end_with_no_progress_since_the_last_look_is_stalled() -> None:
    progress = CostedProgress({"0": 34, "1": 42, "3": 20})
    ends = {0: 42, 1: 42, 3: 25}
    # First look: nothing to compare with yet.
    assert progress.stalled(ends, {}) == {}
    # Partition 0 did not move and is behind; 1 is at its end; 3 moved since.
    assert progress.stalled(ends, {0: 34, 1: 42, 3: 18}) == {0: 34}


def test_a_partition_without_a_record_is_never_called_stalled() -> None:
    assert CostedProgress({}).stalled({0: 10}, {0: None}) == {}


def test_a_restart_on_a_new_log_expects_its_first_offset_whatever_the_old_record() -> None:
    # The old log's record (40) is above every offset of the new log: without the
    # restart its events would be dropped as counted already.
    progress = CostedProgress({"0": 40, "1": 12})
    progress.restart({0: 0, 1: 0})
    admitted = progress.admit([at(0, 0), at(0, 1), at(1, 3)])
    assert positions(admitted.events) == [(0, 0), (0, 1)]
    assert admitted.rewind == {1: 0}  # the old position's events: read from the start
