"""Replay from the lake's raw/: twice gives identical tables; after a calibration fix the
corrected values replace the old ones in the hot store, `latest` and the lake."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from conftest import drain, envelope
from sensorlake.ops.scheduler import run_now
from sensorlake.registry import Calibration, Device
from sensorlake.runtime import Runtime


def load(rt: Runtime, count: int = 30) -> None:
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=count + 1)
    rt.log.append([envelope(device, i, {"pm2_5": 5.0 + i, "pm10": 9.0 + i},
                            ts=(now + timedelta(minutes=i)).isoformat())
                   for i in range(1, count + 1) for device in ("aq-1", "aq-2")])
    drain(rt)


def tables(rt: Runtime) -> dict[str, list[tuple]]:
    """Everything a replay may change: hot rows (with their log offsets), latest, lake."""
    hot = rt.hot.span_readings(1, 10**12).to_pylist()
    lake_files = rt.lake.files("readings")
    lake = duckdb.sql("SELECT tenant, device_id, metric, epoch_us(ts), value, quality, "
                      "epoch_us(received_at) FROM read_parquet(?) ORDER BY ALL",
                      params=[lake_files]).fetchall()
    latest = rt.hot.latest("default").to_pylist()
    return {"hot": sorted((r["device_id"], r["metric"], r["ts"], r["value"], r["quality"])
                          for r in hot),
            "latest": sorted((r["device_id"], r["metric"], r["ts"], r["value"]) for r in latest),
            "lake": lake, "files": sorted(Path(f).name for f in lake_files)}


def replay(rt: Runtime, **params: str) -> dict:
    run = run_now(rt, rt.ops.db, "replay", {"from": "-2h", "to": "now", **params})
    assert run["status"] == "succeeded", run["error"]
    return run["result"]


def test_replay_twice_gives_identical_tables(make_runtime: Callable[..., Runtime]) -> None:
    rt = make_runtime()
    load(rt)
    before = tables(rt)
    first = replay(rt)
    assert first["envelopes"] == 60 and first["readings_after"] == first["readings_before"]
    assert tables(rt) == before  # nothing was wrong: nothing changes, not even file names
    assert first["lake_partitions_rewritten"] == 0
    replay(rt)
    assert tables(rt) == before


def test_a_calibration_fix_replaces_old_values_everywhere(
        make_runtime: Callable[..., Runtime]) -> None:
    rt = make_runtime()
    load(rt)
    before = tables(rt)
    rt.registry.upsert([Device(id="aq-1", lat=52.1, lon=5.1,
                               calibration={"pm2_5": Calibration(scale=2.0)})])
    rt._context_checked = 0.0
    result = replay(rt)
    after = tables(rt)
    assert result["lake_partitions_rewritten"] >= 1
    old = {(d, m, ts): v for d, m, ts, v, _ in before["hot"]}
    for device, metric, ts, value, quality in after["hot"]:
        if device == "aq-1" and metric == "pm2_5":
            assert value == old[(device, metric, ts)] * 2 and quality & 32
        elif metric == "aqi_us" and device == "aq-1":
            assert value >= old[(device, metric, ts)]  # derived from the corrected PM
        elif metric in ("pm10", "pm2_5"):
            assert value == old[(device, metric, ts)]
    assert len(after["hot"]) == len(before["hot"])  # replaced, not added
    assert len(after["lake"]) == len(before["lake"])
    lake_pm = {(r[1], r[3]): r[4] for r in after["lake"] if r[2] == "pm2_5"}
    hot_pm = {(d, int(ts.timestamp() * 1e6)): v for d, m, ts, v, _ in after["hot"]
              if m == "pm2_5"}
    assert lake_pm == hot_pm  # the lake holds the corrected values, once each
    latest = {(d, m): v for d, m, _, v in after["latest"]}
    assert latest[("aq-1", "pm2_5")] == 2 * (5.0 + 30)
    again = tables(rt)
    replay(rt)
    assert tables(rt) == again  # idempotent after a fix too


def test_replay_of_one_device_leaves_the_others_alone(
        make_runtime: Callable[..., Runtime]) -> None:
    rt = make_runtime()
    load(rt, count=10)
    before = tables(rt)
    for device in ("aq-1", "aq-2"):
        rt.registry.upsert([Device(id=device, lat=52.1, lon=5.1,
                                   calibration={"pm10": Calibration(offset=1.0)})])
    rt._context_checked = 0.0
    replay(rt, device="aq-2")
    after = tables(rt)
    changed = {d for (d, m, ts, v, _), (_, _, _, w, _) in zip(before["hot"], after["hot"],
                                                                strict=True) if v != w}
    assert changed == {"aq-2"}
    lake_changed = {b[1] for b, a in zip(before["lake"], after["lake"], strict=True) if b != a}
    assert lake_changed == {"aq-2"}
