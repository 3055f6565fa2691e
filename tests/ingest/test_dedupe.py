"""HashSet64 and RequestIdFilter: membership, growth, per-day generations, expiry."""

from __future__ import annotations

import numpy as np
import pytest

from streams.ingest.dedupe import MAX_LOAD, HashSet64, RequestIdFilter, hash_request_ids


def distinct_values(n: int, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = np.unique(rng.integers(1, 2**63, size=n + n // 10, dtype=np.uint64))
    rng.shuffle(values)
    assert len(values) >= n
    return values[:n]


def test_empty_set_contains_nothing() -> None:
    table = HashSet64()
    assert len(table) == 0
    assert not table.contains(distinct_values(100)).any()


def test_growth_keeps_every_member_and_bounds_the_load() -> None:
    values = distinct_values(60_000)
    members, strangers = values[:40_000], values[40_000:]
    table = HashSet64(capacity=16)
    start_bytes = table.nbytes
    for batch in np.array_split(members, 40):
        table.add(batch)
    assert len(table) == 40_000
    assert table.nbytes > start_bytes
    assert len(table) <= MAX_LOAD * (table.nbytes // 8)
    assert table.contains(members).all()
    assert not table.contains(strangers).any()


def test_values_sharing_low_bits_probe_past_each_other() -> None:
    # Same low 32 bits: every value hashes to the same home slot, forcing long probe chains.
    members = np.arange(1, 201, dtype=np.uint64) * np.uint64(2**32) + np.uint64(5)
    strangers = np.arange(201, 301, dtype=np.uint64) * np.uint64(2**32) + np.uint64(5)
    table = HashSet64(capacity=16)
    table.add(members[:100])
    table.add(members[100:])
    assert table.contains(members).all()
    assert not table.contains(strangers).any()


def test_duplicates_within_one_add_count_once() -> None:
    table = HashSet64()
    table.add(np.array([3, 3, 9, 3], dtype=np.uint64))
    assert len(table) == 2
    assert table.contains(np.array([3, 9, 4], dtype=np.uint64)).tolist() == [True, True, False]


def test_hash_request_ids_is_stable_and_never_zero() -> None:
    hashes = hash_request_ids(["a", "b", "a"])
    assert hashes.dtype == np.uint64
    assert hashes[0] == hashes[2] != hashes[1]
    assert (hashes != 0).all()
    assert len(hash_request_ids([])) == 0


def test_within_batch_duplicates_admit_only_the_first() -> None:
    f = RequestIdFilter()
    assert f.admit(["a", "b", "a", "c", "b"], day=100) == [True, True, False, True, False]
    assert len(f) == 3


def test_an_id_seen_on_one_day_is_a_duplicate_on_later_days() -> None:
    f = RequestIdFilter(horizon_days=7)
    assert f.admit(["a", "b"], day=100) == [True, True]
    assert f.admit(["b", "c"], day=101) == [False, True]
    assert f.admit(["a", "c", "d"], day=104) == [False, False, True]


def test_new_mask_checks_without_marking() -> None:
    f = RequestIdFilter()
    hashes = hash_request_ids(["x", "y", "x"])
    assert f.new_mask(hashes).tolist() == [True, True, False]
    assert f.new_mask(hashes).tolist() == [True, True, False]
    assert len(f) == 0
    f.mark(hashes[f.new_mask(hashes)], day=1)
    assert f.new_mask(hashes).tolist() == [False, False, False]


@pytest.mark.parametrize(("horizon", "kept_until"), [(7, 107), (1, 101)])
def test_a_day_is_kept_for_the_whole_horizon_and_expires_the_day_after(
    horizon: int, kept_until: int
) -> None:
    # Day granularity must never shorten the horizon: an id marked at 23:59 on
    # day 100 is still a duplicate on the last day of the horizon.
    f = RequestIdFilter(horizon_days=horizon)
    f.admit(["old"], day=100)
    f.admit(["newer"], day=101)
    f.expire(today=kept_until)
    assert f.seen(hash_request_ids(["old", "newer"])).tolist() == [True, True]
    f.expire(today=kept_until + 1)
    assert f.seen(hash_request_ids(["old", "newer"])).tolist() == [False, True]
    assert len(f) == 1
    assert f.admit(["old"], day=kept_until + 1) == [True]


def test_expiry_frees_the_day_tables() -> None:
    f = RequestIdFilter(horizon_days=2)
    for day in range(10):
        f.admit([f"{day}-{i}" for i in range(1_000)], day=day)
        f.expire(today=day)
    # Only today and the two days before it remain.
    assert len(f) == 3_000
