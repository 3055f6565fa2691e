"""The online detector's open minutes: one per tenant, bounded at twice the tenants the
detector keeps models for (a million tenants' open minutes held 276 bytes each)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.spend_config import SpendConfig
from streams.spend.monitor import SpendMonitor
from streams.spend.tables import SpendTables
from tests.spend.test_cardinality_alert import row

T0 = datetime(2026, 11, 20, 10, 15, tzinfo=UTC)


def call(tenant: str, at: datetime, offset: int) -> dict[str, Any]:
    return row(offset, at, tenant, latency_ms=700, cost_status="priced")


def test_the_least_recently_written_open_minute_is_dropped_unlearned() -> None:
    config = SpendConfig.model_validate({"detectors": {"online": {"max_tenants": 2}}})
    tables, monitor = SpendTables({}, {}, {}), SpendMonitor(config)

    def observe(tenant: str, at: datetime, offset: int) -> None:
        monitor.observe(tables, tenant, tables.apply(tenant, [call(tenant, at, offset)]))

    for i in range(10):
        observe(f"t{i}", T0, i)
    assert list(monitor._minutes) == ["t6", "t7", "t8", "t9"]
    observe("t6", T0 + timedelta(seconds=5), 10)  # written again: now the last to go
    observe("t0", T0 + timedelta(seconds=5), 11)  # dropped before, open again
    assert list(monitor._minutes) == ["t8", "t9", "t6", "t0"]
    # A later minute closes a held minute, which the detector learns; t7's was dropped.
    observe("t6", T0 + timedelta(minutes=1), 12)
    observe("t7", T0 + timedelta(minutes=1), 13)
    assert "t6" in monitor.online
    assert "t7" not in monitor.online
    assert monitor._minutes["t6"][0] == int((T0 + timedelta(minutes=1)).timestamp()) // 60
