"""The energy derived series on an in-memory reader: one query for every device, per-reading
and bucketed cost in the tariff's currency, CO2e, the monthly demand charge."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from sensorlake.config import load_settings
from sensorlake.derived import energy as series
from sensorlake.derived.base import SERIES_COLUMNS, DerivedRequest, load_all
from sensorlake.store.base import SERIES_SCHEMA, ReadingQuery

TARIFFS = """
currency: GBP
tariffs:
  tou:
    price: 0.10
    co2e_kg_per_kwh: 0.5
    periods: [{days: weekdays, hours: "17:00-21:00", price: 0.30}]
    demand: {price_per_kw: 10, interval: 15m}
  flat: {price: 0.20, currency: EUR}
assign:
  devices: {m1: tou, p1: flat}
"""
START = datetime(2026, 7, 15, 0, 0, tzinfo=UTC)  # a Wednesday, BST (UTC+1)
QUARTER = timedelta(minutes=15)


def rows() -> pa.Table:
    """m1: a counter, +0.25 kWh per quarter (1 kW), one quarter of +1 kWh (4 kW) at 12:00
    UTC; p1: 2000 W of power every quarter; both from 23:00 UTC the day before."""
    out, value = [], 500.0
    for i in range(4, 4 + 24 * 4 * 2):
        at = START - timedelta(hours=1) + (i - 4) * QUARTER
        value += 1.0 if at == START + timedelta(hours=12, minutes=15) else 0.25
        out.append({"device_id": "m1", "metric": "energy", "ts": at, "value": value, "count": 1})
        out.append({"device_id": "p1", "metric": "power", "ts": at, "value": 2000.0,
                    "count": 1})
    return pa.Table.from_pylist(out, schema=SERIES_SCHEMA)


class Reader:
    def __init__(self) -> None:
        self.table = rows()
        self.queries: list[ReadingQuery] = []

    def __call__(self, query: ReadingQuery) -> pa.Table:
        self.queries.append(query)
        frame = pl.from_arrow(self.table)
        assert isinstance(frame, pl.DataFrame)
        return frame.filter(pl.col("ts") >= query.start, pl.col("ts") < query.end,
                            pl.col("metric").is_in(list(query.metrics)),
                            pl.col("device_id").is_in(list(query.device_ids or ()))).to_arrow()


@pytest.fixture
def request_(tmp_path: Path) -> DerivedRequest:
    (tmp_path / "tariffs.yaml").write_text(TARIFFS)
    settings = load_settings(data_dir=tmp_path, energy={"grid_co2e_kg_per_kwh": 0.2})
    return DerivedRequest(tenant="t", device_ids=("m1", "p1"), start=START,
                          end=START + timedelta(days=1), every=timedelta(days=1),
                          read=Reader(), settings=settings,
                          timezone_of=lambda _d: "Europe/London")


def frame(table: pa.Table) -> pl.DataFrame:
    out = pl.from_arrow(table)
    assert isinstance(out, pl.DataFrame)
    return out


def test_the_series_are_registered_with_their_extra_columns() -> None:
    registry = load_all()
    for name in ("energy_delta", "cost", "co2e", "demand_charge"):
        assert name in registry
    assert registry["cost"].extra_columns == ("currency", "status")


def test_one_query_reads_every_device_with_a_lookback(request_: DerivedRequest) -> None:
    table = series.energy_delta(request_)
    assert table.schema.names[:5] == SERIES_COLUMNS.names
    reader = request_.read
    assert isinstance(reader, Reader) and len(reader.queries) == 1
    query = reader.queries[0]
    assert query.device_ids == ("m1", "p1") and query.metrics == ("energy", "power")
    assert query.start == START - timedelta(hours=48)


def test_daily_energy_cost_and_co2e(request_: DerivedRequest) -> None:
    # local days: 15 July 00:00 BST = 14 July 23:00 UTC; the range starts an hour later
    energy = frame(series.energy_delta(request_)).sort("device_id", "ts")
    m1 = energy.filter(pl.col("device_id") == "m1")
    # 15 July 00:00-24:00 UTC: 96 quarters of 0.25 kWh, one of them 1 kWh; the local day
    # holds 23 of those hours (00:00Z is 01:00 BST), the next local day the last one
    assert m1["value"].sum() == pytest.approx(96 * 0.25 + 0.75)
    assert m1["value"][0] == pytest.approx(92 * 0.25 + 0.75)
    cost = frame(series.cost(request_)).sort("device_id", "ts")
    c1 = cost.filter(pl.col("device_id") == "m1")
    # peak 17:00-21:00 BST = 16:00-20:00 UTC: 16 quarters at 0.30, the rest at 0.10
    assert c1["value"].sum() == pytest.approx(16 * 0.25 * 0.30 + (80 * 0.25 + 0.75) * 0.10)
    assert set(c1["currency"].to_list()) == {"GBP"}
    p1 = cost.filter(pl.col("device_id") == "p1")
    assert p1["value"].sum() == pytest.approx(48.0 * 0.20)  # 2 kW for 24 h, EUR
    assert set(p1["currency"].to_list()) == {"EUR"}
    co2e = frame(series.co2e(request_)).sort("device_id", "ts")
    assert co2e.filter(pl.col("device_id") == "m1")["value"].sum() == pytest.approx(
        (96 * 0.25 + 0.75) * 0.5)                                          # tariff factor
    assert co2e.filter(pl.col("device_id") == "p1")["value"].sum() == pytest.approx(
        48.0 * 0.2)                                                        # the setting's


def test_per_reading_cost_is_priced_at_the_end_of_its_interval(
        request_: DerivedRequest) -> None:
    raw = frame(series.cost(replace(request_, every=None)))
    m1 = raw.filter(pl.col("device_id") == "m1")
    at = {ts: value for ts, value in zip(m1["ts"], m1["value"], strict=True)}
    # the reading at 16:00 UTC (17:00 BST) closes 16:45-17:00 BST: off-peak
    assert at[START + timedelta(hours=16)] == pytest.approx(0.25 * 0.10)
    assert at[START + timedelta(hours=16, minutes=15)] == pytest.approx(0.25 * 0.30)
    assert at[START + timedelta(hours=20)] == pytest.approx(0.25 * 0.30)
    assert at[START + timedelta(hours=20, minutes=15)] == pytest.approx(0.25 * 0.10)
    assert set(m1["count"].to_list()) == {1}


def test_devices_without_a_tariff_have_no_cost(request_: DerivedRequest) -> None:
    request = replace(request_, device_ids=("m1", "p1", "x9"))
    request.read.table = pa.concat_tables([  # type: ignore[attr-defined]
        request.read.table,  # type: ignore[attr-defined]
        pa.Table.from_pylist([{"device_id": "x9", "metric": "energy", "ts": START + i * QUARTER,
                               "value": float(i), "count": 1} for i in range(8)],
                             schema=SERIES_SCHEMA)])
    x9 = frame(series.cost(request)).filter(pl.col("device_id") == "x9")
    assert x9["value"].to_list() == [None] and x9["status"].to_list() == ["no_tariff"]


def test_demand_charge_per_local_month(request_: DerivedRequest) -> None:
    table = frame(series.demand_charge(request_))
    assert table["device_id"].to_list() == ["m1"]  # p1's tariff has no demand charge
    row = table.row(0, named=True)
    assert row["ts"] == datetime(2026, 6, 30, 23, 0, tzinfo=UTC)  # 1 July 00:00 BST
    assert row["peak_kw"] == pytest.approx(4.0)
    assert row["value"] == pytest.approx(40.0) and row["currency"] == "GBP"
    assert row["peak_ts"] == START + timedelta(hours=12)
    assert row["status"] == "final"
