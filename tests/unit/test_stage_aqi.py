"""AqiStage: table in, table out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from sensorlake.config import Settings
from sensorlake.process.aqi import AqiStage
from sensorlake.process.base import WORKING_SCHEMA, Batch, Context, Stage

T0 = datetime(2026, 11, 23, 14, 0, tzinfo=UTC)


def row(metric: str, value: float, device: str = "aq-1", ts: datetime = T0,
        **extra: Any) -> dict[str, Any]:
    base = {
        "tenant": "acme", "device_id": device, "metric": metric, "ts": ts, "value": value,
        "quality": 0, "received_at": ts + timedelta(seconds=1), "lat": 51.5, "lon": -0.1,
        "msg_id": f"m-{device}-{metric}",
    }
    return base | extra


def run(*rows: dict[str, Any]) -> pa.Table:
    table = pa.Table.from_pylist(list(rows), schema=WORKING_SCHEMA)
    out = AqiStage().process(Batch(table), Context(settings=Settings()))
    assert out.readings.schema == WORKING_SCHEMA
    assert out.rejects.num_rows == 0
    kept = out.readings.slice(0, table.num_rows)  # the input rows come first, untouched
    for name in WORKING_SCHEMA.names:
        if name == "value":  # NaN != NaN for Table.equals
            np.testing.assert_array_equal(kept[name].to_numpy(), table[name].to_numpy())
        else:
            assert kept[name].equals(table[name])
    return out.readings


def derived(out: pa.Table) -> dict[tuple[str, datetime, str], dict[str, Any]]:
    return {
        (r["device_id"], r["ts"], r["metric"]): r
        for r in out.to_pylist()
        if r["metric"] in ("aqi_us", "aqi_uk")
    }


@pytest.fixture
def stage() -> AqiStage:
    return AqiStage()


def test_is_a_stage(stage: AqiStage) -> None:
    assert isinstance(stage, Stage)
    assert stage.name == "aqi"


def test_both_pollutants_one_row_each_with_the_maximum() -> None:
    # pm2_5 20.0 -> US 71, DAQI 2; pm10 200 -> US 123, DAQI 10
    out = run(
        row("pm2_5", 20.0, quality=3, msg_id="m-25", lat=1.0),
        row("pm10", 200.0, quality=7, msg_id="m-10", lat=2.0),
        row("temperature", 21.5),
    )
    assert out.num_rows == 5
    got = derived(out)
    assert set(got) == {("aq-1", T0, "aqi_us"), ("aq-1", T0, "aqi_uk")}
    us, uk = got["aq-1", T0, "aqi_us"], got["aq-1", T0, "aqi_uk"]
    assert (us["value"], uk["value"]) == (123.0, 10.0)
    for new in (us, uk):  # copied from the pm2_5 row
        assert (new["quality"], new["msg_id"], new["lat"], new["lon"]) == (3, "m-25", 1.0, -0.1)
        assert new["received_at"] == T0 + timedelta(seconds=1)
        assert new["tenant"] == "acme"


def test_pm2_5_dominant() -> None:
    got = derived(run(row("pm10", 20.0), row("pm2_5", 40.0)))
    assert got["aq-1", T0, "aqi_us"]["value"] == 112.0  # pm10 20 -> 19
    assert got["aq-1", T0, "aqi_uk"]["value"] == 4.0  # pm10 20 -> 2


def test_only_pm10() -> None:
    got = derived(run(row("pm10", 100.0, msg_id="only-10"), row("humidity", 40.0)))
    assert got["aq-1", T0, "aqi_us"]["value"] == 73.0
    assert got["aq-1", T0, "aqi_uk"]["value"] == 9.0
    assert got["aq-1", T0, "aqi_us"]["msg_id"] == "only-10"


def test_no_pm_adds_nothing() -> None:
    out = run(row("temperature", 20.0), row("co2", 800.0), row("pm1", 30.0))
    assert out.num_rows == 3


def test_empty_batch(stage: AqiStage) -> None:
    batch = Batch()
    assert stage.process(batch, Context(settings=Settings())).readings.num_rows == 0


def test_several_devices_and_timestamps() -> None:
    t1 = T0 + timedelta(minutes=1)
    out = run(
        row("pm2_5", 9.0, "a"), row("pm2_5", 9.1, "a", t1), row("pm10", 55.0, "a", t1),
        row("pm10", 604.0, "b"), row("pm2_5", 35.5, "b", t1),
        row("pm2_5", 11.5, "c", tenant="other"),
    )
    got = {key: r["value"] for key, r in derived(out).items()}
    assert got == {
        ("a", T0, "aqi_us"): 50.0, ("a", T0, "aqi_uk"): 1.0,
        ("a", t1, "aqi_us"): 51.0, ("a", t1, "aqi_uk"): 4.0,
        ("b", T0, "aqi_us"): 500.0, ("b", T0, "aqi_uk"): 10.0,
        ("b", t1, "aqi_us"): 101.0, ("b", t1, "aqi_uk"): 4.0,
        ("c", T0, "aqi_us"): 55.0, ("c", T0, "aqi_uk"): 2.0,
    }
    tenants = {r["device_id"]: r["tenant"] for r in out.to_pylist() if r["metric"] == "aqi_us"}
    assert tenants["c"] == "other"


def test_same_device_in_two_tenants_stays_apart() -> None:
    out = run(row("pm2_5", 9.0), row("pm2_5", 200.0, tenant="other"))
    rows = [r for r in out.to_pylist() if r["metric"] == "aqi_us"]
    assert sorted((r["tenant"], r["value"]) for r in rows) == [("acme", 50.0), ("other", 275.0)]


def test_bad_values_are_skipped_not_raised() -> None:
    out = run(
        row("pm2_5", float("nan")), row("pm10", -5.0),
        row("pm2_5", float("inf"), "b"), row("pm10", 30.0, "b"),
    )
    got = {key: r["value"] for key, r in derived(out).items()}
    assert got == {("b", T0, "aqi_us"): 28.0, ("b", T0, "aqi_uk"): 2.0}  # pm2_5 inf ignored


def test_idempotent_and_existing_derived_rows_kept() -> None:
    first = run(row("pm2_5", 20.0), row("pm10", 20.0))
    again = AqiStage().process(Batch(first), Context(settings=Settings())).readings
    assert again.equals(first)
    out = run(row("pm2_5", 20.0), row("aqi_us", 999.0))
    assert [r["value"] for r in out.to_pylist() if r["metric"] == "aqi_us"] == [999.0]
    assert [r["value"] for r in out.to_pylist() if r["metric"] == "aqi_uk"] == [2.0]


def test_rejects_pass_through(stage: AqiStage) -> None:
    readings = pa.Table.from_pylist([row("pm2_5", 5.0)], schema=WORKING_SCHEMA)
    rejects = pa.Table.from_pylist(
        [{"msg_id": "x", "tenant": "acme", "device_id": "d", "stage": "validate",
          "field": "pm10", "value": "-1", "reason": "below minimum"}],
        schema=Batch().rejects.schema,
    )
    out = stage.process(Batch(readings, rejects), Context(settings=Settings()))
    assert out.rejects.equals(rejects)
    assert out.readings.num_rows == 3
