"""The in-stream spend tables: event-time buckets, counts beside cost, re-delivery
skipped by source offset, bounded cardinality, expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from streams.spend.tables import OVERFLOW, SEP, SpendTables, bucket_requests, bucket_stats

T0 = datetime(2026, 11, 20, 10, 15, tzinfo=UTC)


def row(offset: int, **overrides: Any) -> dict[str, Any]:
    base = {
        "request_id": f"r{offset}",
        "timestamp": T0.isoformat(),
        "tenant_id": "acme",
        "team_id": "search",
        "user_id": "u1",
        "workflow_id": "answer",
        "workflow_run_id": "run-1",
        "model": "gpt-4o-mini",
        "input_tokens": 1000,
        "output_tokens": 100,
        "request_count": 1,
        "retry_count": 0,
        "retry_of": "",
        "status_code": 200,
        "cost_usd": "0.0002100",
        "source_partition": 0,
        "source_offset": offset,
    }
    base.update(overrides)
    return base


def tables(**kwargs: Any) -> SpendTables:
    return SpendTables({}, {}, {}, **kwargs)


def hour_key(dim: str, value: str, at: datetime = T0) -> str:
    return SEP.join(("acme", dim, value, str(int(at.timestamp()) // 3600)))


def test_rows_land_in_their_event_time_hour_for_every_dimension() -> None:
    t = tables()
    later = T0 + timedelta(hours=3)
    t.apply(
        "acme",
        [
            row(1),
            row(2, user_id="u2", status_code=500, retry_count=1),
            row(3, timestamp=later.isoformat(), model="gpt-4o", cost_usd="0.5"),
        ],
    )
    bucket = t.hourly[hour_key("tenant", "acme")]
    assert Decimal(bucket["cost"]) == Decimal("0.0004200")
    assert (bucket_requests(bucket), bucket["retries"], bucket["errors"]) == (2, 1, 1)
    assert sorted(bucket["users"]) == ["u1", "u2"]
    assert bucket["input"] == 2000 and bucket["models"] == {"gpt-4o-mini": 2}
    for dim, value in (("workflow", "answer"), ("team", "search"), ("model", "gpt-4o-mini")):
        assert bucket_requests(t.hourly[hour_key(dim, value)]) == 2
    assert Decimal(t.hourly[hour_key("model", "gpt-4o", later)]["cost"]) == Decimal("0.5")
    assert t.month_spend("acme", T0) == Decimal("0.5004200")
    run = t.runs[SEP.join(("acme", "run", "answer", "run-1"))]
    assert Decimal(run["cost"]) == Decimal("0.5004200")


def test_a_redelivered_costed_message_is_not_counted_twice() -> None:
    t = tables()
    first = t.apply("acme", [row(5), row(6)])
    again = t.apply("acme", [row(5), row(6)])
    assert len(first.counted) == 2 and again.skipped == 2 and not again.counted
    assert bucket_requests(t.hourly[hour_key("tenant", "acme")]) == 2


def test_a_new_source_logs_positions_from_zero_count_under_marks_of_their_own() -> None:
    """A new in-memory broker's log starts at offset 0 under the old log's higher marks:
    its rows name it (`source_log`), and count; the old log's re-deliveries are still
    skipped, and so are the new log's."""
    t = tables()
    t.apply("acme", [row(90, source_log="cluster-a"), row(91, source_log="cluster-a")])
    new = t.apply("acme", [row(0, source_log="cluster-b"), row(1, source_log="cluster-b")])
    assert len(new.counted) == 2 and new.skipped == 0
    again = t.apply("acme", [row(91, source_log="cluster-a"), row(1, source_log="cluster-b")])
    assert again.skipped == 2 and not again.counted
    assert bucket_requests(t.hourly[hour_key("tenant", "acme")]) == 4
    assert t.month_spend("acme", T0) == Decimal("0.0002100") * 4
    run = t.runs[SEP.join(("acme", "run", "answer", "run-1"))]
    assert Decimal(run["cost"]) == Decimal("0.0002100") * 4


def test_rows_of_one_array_message_share_an_offset_and_all_count() -> None:
    t = tables()
    result = t.apply("acme", [row(7, request_id="a"), row(7, request_id="b")])
    assert len(result.counted) == 2
    assert bucket_requests(t.hourly[hour_key("tenant", "acme")]) == 2


def test_expiry_when_due_runs_once_per_period_of_the_wall_clock() -> None:
    t = tables()
    old = T0 - timedelta(days=9)
    every = timedelta(minutes=10)
    t.apply("acme", [row(1)])
    assert t.expire_due("acme", T0, every) == 0  # the first check: nothing past retention
    t.apply("acme", [row(2, timestamp=old.isoformat())])
    assert t.expire_due("acme", T0 + timedelta(minutes=9), every) == 0  # not due yet
    assert hour_key("tenant", "acme", old) in t.hourly
    assert t.expire_due("acme", T0 + timedelta(minutes=10), every) > 0
    assert hour_key("tenant", "acme", old) not in t.hourly
    assert hour_key("tenant", "acme") in t.hourly


def test_distinct_workflows_beyond_the_cap_go_to_the_overflow_bucket() -> None:
    t = tables(max_values_per_dim=3)
    t.apply("acme", [row(i, workflow_id=f"wf-{i}", workflow_run_id="") for i in range(10)])
    workflows = {k.split(SEP)[2] for k in t.hourly if k.split(SEP)[1] == "workflow"}
    assert workflows == {"wf-0", "wf-1", "wf-2", OVERFLOW}
    assert bucket_requests(t.hourly[hour_key("workflow", OVERFLOW)]) == 7
    assert t.overflowed == 7


def test_expiry_drops_hours_past_retention_and_keeps_the_month() -> None:
    t = tables()
    old = T0 - timedelta(days=9)
    t.apply("acme", [row(1, timestamp=old.isoformat()), row(2)])
    dropped = t.expire("acme", T0)
    assert dropped > 0
    assert hour_key("tenant", "acme", old) not in t.hourly
    assert hour_key("tenant", "acme") in t.hourly
    assert t.month_spend("acme", T0) == Decimal("0.0004200")


def test_a_message_split_across_costed_chunks_counts_each_row_once() -> None:
    # One source message (offset 9) of four events, published as two costed chunks,
    # then both chunks again after a crash: every row counts exactly once.
    t = tables()
    first = [row(9, request_id=f"e{i}", source_index=i) for i in range(2)]
    second = [row(9, request_id=f"e{i}", source_index=i) for i in range(2, 4)]
    for chunk in (first, second, first, second):
        t.apply("acme", chunk)
    assert bucket_requests(t.hourly[hour_key("tenant", "acme")]) == 4


def test_after_recovery_the_index_is_rebuilt_and_expiry_still_works() -> None:
    t = tables()
    old = T0 - timedelta(days=9)
    t.apply("acme", [row(1, timestamp=old.isoformat()), row(2)])
    recovered = SpendTables(t.hourly, t.totals, t.runs)  # a restarted worker
    recovered.rebuild_index()
    assert recovered.expire("acme", T0) > 0
    assert hour_key("tenant", "acme", old) not in recovered.hourly


def test_a_tenant_id_holding_the_key_separator_is_indexed_and_expired_as_itself() -> None:
    """Table keys start with the tenant id, which may hold "|": after recovery its keys
    are its own (not those of a tenant named by its first part), its distinct values
    hold their place under the cap, and expiry removes its old keys. A run of a
    workflow id holding "|" reports its own ids."""
    t = tables()
    old = T0 - timedelta(days=9)
    result = t.apply(
        "a|b",
        [
            row(1, tenant_id="a|b", timestamp=old.isoformat()),
            row(2, tenant_id="a|b", workflow_id="w|x", workflow_run_id="r|1"),
        ],
    )
    assert {(r.workflow_id, r.run_id) for r in result.runs} >= {("w|x", "r|1")}
    recovered = SpendTables(t.hourly, t.totals, t.runs)  # a restarted worker
    recovered.rebuild_index()
    assert "a" not in recovered._tenants
    assert set(recovered._tenants["a|b"].owned) == {*t.hourly, *t.totals, *t.runs}
    assert "w/x" in str(recovered._tenants["a|b"].workflow)
    old_hour = SEP.join(("a|b", "tenant", "a/b", str(int(old.timestamp()) // 3600)))
    assert old_hour in recovered.hourly
    assert recovered.expire("a|b", T0) > 0
    assert old_hour not in recovered.hourly


def test_a_crash_that_kept_some_table_writes_neither_drops_nor_double_counts() -> None:
    # Each table write is its own changelog record: a worker killed mid-batch may have
    # persisted the hourly buckets and the run but not the month total, or the reverse.
    # The batch is re-published after the restart; every value must end up holding it
    # exactly once.
    batch = [row(1), row(2, workflow_id="summarize"), row(1, source_partition=1)]
    for kept in ("hourly", "totals", "runs"):
        before = tables()
        before.apply("acme", [row(0)])
        after = tables()
        after.apply("acme", [row(0)])
        after.apply("acme", batch)
        # What recovery brings back: `kept` as after the batch, the others as before.
        recovered = SpendTables(
            dict(after.hourly if kept == "hourly" else before.hourly),
            dict(after.totals if kept == "totals" else before.totals),
            dict(after.runs if kept == "runs" else before.runs),
        )
        recovered.rebuild_index()
        result = recovered.apply("acme", batch)

        assert recovered.month_spend("acme", T0) == Decimal("0.0008400"), kept
        tenant_hour = recovered.hourly[hour_key("tenant", "acme")]
        assert bucket_requests(tenant_hour) == 4, kept
        assert bucket_requests(recovered.hourly[hour_key("workflow", "summarize")]) == 1, kept
        run = recovered.runs[SEP.join(("acme", "run", "answer", "run-1"))]
        assert Decimal(run["cost"]) == Decimal("0.0006300"), kept
        # Rows the month total already held are re-deliveries, not new spend.
        assert len(result.counted) == (0 if kept == "totals" else 3), kept


def test_a_replay_of_old_events_keeps_each_hours_whole_total_across_lists() -> None:
    # Events weeks old, counted in two lists of the same hour with an expiry between
    # them at wall-clock time: retention counts from the newest event time, so the
    # second list adds to the hour's bucket instead of starting it again from zero.
    t = tables(hourly_retention_hours=6)
    t.apply("acme", [row(0), row(1)])
    assert t.expire("acme", T0 + timedelta(days=30)) == 0
    t.apply("acme", [row(2)])
    assert Decimal(t.hour_bucket("acme", "tenant", "acme", T0)["cost"]) == Decimal("0.00063")
    later = T0 + timedelta(hours=7)
    t.apply("acme", [row(3, timestamp=later.isoformat())])
    assert t.expire("acme", T0 + timedelta(days=30)) > 0  # now T0's hour is past retention
    assert t.hourly.get(hour_key("tenant", "acme")) is None
    # A tenant idle since its last expiry expires by wall-clock time.
    assert t.expire("acme", T0 + timedelta(days=30)) > 0
    assert not t.hourly


def test_values_sharing_their_equal_parts_stay_apart_when_one_changes() -> None:
    """One list's tenant, workflow, team and model buckets of an hour (and its totals)
    hold equal costs, users, models and marks, held once: counting more rows into one
    of them later leaves the others as they were."""
    t = tables()
    t.apply("acme", [row(1), row(2, user_id="u2")])
    before = {key: dict(bucket) for key, bucket in t.hourly.items()}
    totals_held = dict(t.totals)  # the day's and month's values, one shared object
    totals_before = {key: dict(value) for key, value in t.totals.items()}
    t.apply("acme", [row(3, team_id="other", model="gpt-4o", user_id="u3", cost_usd="1")])
    for dim, value in (("workflow", "answer"), ("tenant", "acme")):
        bucket = t.hourly[hour_key(dim, value)]
        assert (bucket_requests(bucket), sorted(bucket["users"])) == (3, ["u1", "u2", "u3"])
        assert bucket["models"] == {"gpt-4o-mini": 2, "gpt-4o": 1}
    for dim, value in (("team", "search"), ("model", "gpt-4o-mini")):
        assert t.hourly[hour_key(dim, value)] == before[hour_key(dim, value)]
    # Both totals changed: into new values, the shared old one untouched.
    assert {key: dict(value) for key, value in totals_held.items()} == totals_before
    assert all(t.totals[key] is not value for key, value in totals_held.items())
    assert t.tenant_day("acme", T0).cost == Decimal("1.0004200")
    assert t.month_spend("acme", T0) == Decimal("1.0004200")


def test_equal_values_of_one_list_are_one_object_and_unequal_ones_stay_apart() -> None:
    """Memory (T11): a tenant's tenant, workflow, team and model buckets of an hour are
    equal when it has one of each, and held once; a bucket that differs (a second
    workflow's share) is its own value, and a later write does not touch the others."""
    t = tables()
    t.apply("acme", [row(1)])
    buckets = [t.hourly[hour_key(dim, value)] for dim, value in (
        ("tenant", "acme"), ("workflow", "answer"), ("team", "search"), ("model", "gpt-4o-mini")
    )]  # fmt: skip
    assert all(bucket is buckets[0] for bucket in buckets)
    t.apply("acme", [row(2, workflow_id="summarize", input_tokens=5000)])
    assert t.hourly[hour_key("workflow", "answer")]["input"] == 1000
    assert t.hourly[hour_key("workflow", "summarize")]["input"] == 5000
    assert t.hourly[hour_key("tenant", "acme")]["input"] == 6000
    assert t.hourly[hour_key("team", "search")] is t.hourly[hour_key("tenant", "acme")]
    assert t.hourly[hour_key("workflow", "answer")] is not t.hourly[hour_key("tenant", "acme")]


def test_tenants_with_one_models_few_calls_share_it_and_more_calls_leave_the_others() -> None:
    """Memory (T11): most tenants' hours are a few calls to one model; that {model:
    calls} is one dict for every tenant's bucket, and counting into one tenant's hour
    makes it a new dict, not a change to the one the others hold."""
    t = tables()
    for offset, tenant in enumerate(("acme", "globex", "initech")):
        t.apply(tenant, [row(offset, tenant_id=tenant, user_id="")])
    models = [t.hour_bucket(tenant, "tenant", tenant, T0)["models"] for tenant in
              ("acme", "globex", "initech")]  # fmt: skip
    assert models[0] == {"gpt-4o-mini": 1}
    assert models[1] is models[0] and models[2] is models[0]
    t.apply("globex", [row(10, tenant_id="globex", user_id="")])
    assert t.hour_bucket("globex", "tenant", "globex", T0)["models"] == {"gpt-4o-mini": 2}
    assert t.hour_bucket("acme", "tenant", "acme", T0)["models"] == {"gpt-4o-mini": 1}
    assert t.hour_bucket("initech", "model", "gpt-4o-mini", T0)["models"] is models[0]


def test_a_bucket_leaves_out_its_empty_fields_and_one_written_in_full_reads_the_same() -> None:
    """Memory (T11): calls with no user, retry, error or estimate make a bucket of five
    fields with its marks (a dict of five takes 184 bytes, of six to ten 272). A bucket
    written in full by an earlier version, recovered from its changelog, reads and
    merges as the sparse one."""
    quiet = row(1, user_id=None, retry_count=0, status_code=200)
    t = tables()
    t.apply("acme", [quiet])
    bucket = t.hourly[hour_key("tenant", "acme")]
    assert set(bucket) == {"cost", "input", "output", "models", "seen"}
    assert bucket_stats(bucket) == bucket_stats(
        {**bucket, "requests": 1, "users": [], "retries": 0, "errors": 0, "estimated": "0"}
    )
    assert (bucket_stats(bucket).requests, bucket_stats(bucket).distinct_users) == (1, 0)

    full = tables()
    full.apply("acme", [quiet])
    key = hour_key("tenant", "acme")
    full.hourly[key] = {
        **full.hourly[key],
        "requests": 1,
        "users": [],
        "retries": 0,
        "errors": 0,
        "estimated": "0",
    }
    for each in (t, full):
        each.apply("acme", [row(2, user_id="u9", retry_count=1)])
    assert t.hourly[key] == full.hourly[key]
    assert bucket_stats(t.hourly[key]).requests == 2
    assert t.hourly[key]["users"] == ["u9"] and t.hourly[key]["retries"] == 1
