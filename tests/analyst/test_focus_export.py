"""The FOCUS export has every listed FOCUS 1.2 column with the right type, and its
BilledCost adds up to the month's ledger total."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from clickhouse_connect.driver.client import Client

from streams.analyst.focus_export import export_focus
from streams.analyst.periods import month
from streams.errors import ConfigError
from streams.ledger.remote import DirectReader
from tests.analyst import ledger_data as data

NOVEMBER = month("2026-11")
COST_COLUMNS = ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost")
QUANTITY_COLUMNS = ("ConsumedQuantity", "PricingQuantity")
TIME_COLUMNS = ("BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd")
STRING_COLUMNS = (
    "BillingCurrency",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ServiceName",
    "ServiceCategory",
    "ServiceSubcategory",
    "ServiceProviderName",
    "SkuId",
    "SkuMeter",
    "ConsumedUnit",
    "PricingUnit",
    "SubAccountId",
    "Tags",
)
METERS = {
    "Input Tokens": lambda e: e["input_tokens"] - e["cached_tokens"] - e["cache_write_tokens"],
    "Cached Input Tokens": lambda e: e["cached_tokens"],
    "Cache Write Tokens": lambda e: e["cache_write_tokens"],
    "Output Tokens": lambda e: e["output_tokens"] - e["reasoning_tokens"],
    "Reasoning Tokens": lambda e: e["reasoning_tokens"],
}


@pytest.fixture(scope="module")
def november(module_ch: Client) -> list[dict[str, Any]]:
    events = data.make_events()
    data.insert(module_ch, events, token="batch-1")
    return [e for e in events if NOVEMBER.start <= e["timestamp"].date() <= NOVEMBER.end]


@pytest.fixture(scope="module")
def parquet(
    module_ch: Client, november: list, tmp_path_factory: pytest.TempPathFactory
) -> pa.Table:
    path = tmp_path_factory.mktemp("focus") / "focus.parquet"
    assert export_focus(DirectReader(module_ch), NOVEMBER, path) > 0
    return pq.read_table(path)


def test_parquet_has_every_focus_column_with_its_type(parquet: pa.Table) -> None:
    schema = parquet.schema
    for name in COST_COLUMNS:
        assert schema.field(name).type == pa.decimal128(38, 18), name
    for name in QUANTITY_COLUMNS:
        assert pa.types.is_decimal(schema.field(name).type), name
    for name in TIME_COLUMNS:
        assert schema.field(name).type == pa.timestamp("ms", tz="UTC"), name
    for name in STRING_COLUMNS:
        assert schema.field(name).type == pa.string(), name
    own = [name for name in schema.names if name.startswith("x_")]
    assert {"x_TeamId", "x_WorkflowId", "x_FeatureName", "x_Environment"} <= set(own)


def test_parquet_values_follow_focus(parquet: pa.Table, november: list[dict[str, Any]]) -> None:
    rows = parquet.to_pylist()
    assert sum((r["BilledCost"] for r in rows), Decimal(0)) == sum(
        (e["cost_usd"] for e in november), Decimal(0)
    )
    start = datetime(2026, 11, 1, tzinfo=UTC)
    assert {r["BillingPeriodStart"] for r in rows} == {start}
    assert {r["BillingPeriodEnd"] for r in rows} == {datetime(2026, 12, 1, tzinfo=UTC)}
    assert {r["ServiceCategory"] for r in rows} == {"AI and Machine Learning"}
    assert {r["ServiceSubcategory"] for r in rows} == {"Generative AI"}
    assert {r["ChargeCategory"] for r in rows} == {"Usage"}
    assert {r["ChargeClass"] for r in rows} == {None}
    assert {r["BillingCurrency"] for r in rows} == {"USD"}
    assert {r["SkuId"] for r in rows} == {e["model"] for e in november}
    assert {r["SubAccountId"] for r in rows} == {e["tenant_id"] for e in november}
    assert {r["ServiceProviderName"] for r in rows} >= {"OpenAI", "Anthropic"}
    for row in rows:
        assert row["EffectiveCost"] == row["ListCost"] == row["ContractedCost"] == row["BilledCost"]
        assert row["PricingQuantity"] * 1_000_000 == row["ConsumedQuantity"]
        assert row["ChargePeriodStart"] >= start
        tags = json.loads(row["Tags"])
        assert set(tags) == {"team", "workflow", "feature", "environment"}
    for meter, tokens in METERS.items():
        exported = sum(r["ConsumedQuantity"] for r in rows if r["SkuMeter"] == meter)
        assert exported == sum(tokens(e) for e in november), meter


def test_csv_export_has_the_same_charges(
    module_ch: Client, parquet: pa.Table, tmp_path: Path
) -> None:
    path = tmp_path / "focus.csv"
    export_focus(DirectReader(module_ch), NOVEMBER, path)
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == parquet.schema.names
    assert len(rows) == parquet.num_rows
    assert sum(Decimal(r["BilledCost"]) for r in rows) == sum(
        parquet.column("BilledCost").to_pylist(), Decimal(0)
    )
    assert rows[0]["BillingPeriodStart"] == "2026-11-01T00:00:00Z"
    assert rows[0]["ChargeClass"] == ""
    assert json.loads(rows[0]["Tags"])["environment"] in {"prod", "staging"}


def test_other_file_types_are_refused(module_ch: Client, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\.csv or \.parquet"):
        export_focus(DirectReader(module_ch), NOVEMBER, tmp_path / "focus.xlsx")
