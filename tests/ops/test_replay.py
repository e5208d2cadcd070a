"""Replay from the lake's raw/: twice gives identical tables; after a calibration fix the
corrected values replace the old ones in the hot store, `latest` and the lake."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from conftest import drain, envelope
from sensorlake.decode.lineprotocol import MANY_DEVICES
from sensorlake.log.base import Envelope
from sensorlake.ops.scheduler import run_now
from sensorlake.registry import Calibration, Device
from sensorlake.runtime import Runtime
from sensorlake.store.base import HOT_SCHEMA
from sensorlake.store.duckdb import DuckDBStore
from sensorlake.store.memory import MemoryStore


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
    assert rt.hot.write(rt.hot.span_readings(1, 10**12)) == 0  # redelivery stores nothing


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


def test_replay_of_one_device_in_envelopes_of_many_devices(
        make_runtime: Callable[..., Runtime]) -> None:
    rt = make_runtime()
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)
    lines = [f"air,device={d} pm2_5={5 + i},pm10={9 + i} "
             f"{int((start + timedelta(minutes=i)).timestamp()) * 10**9}"
             for i in range(10) for d in ("aq-1", "aq-2")]
    now_us = int(datetime.now(UTC).timestamp() * 1e6)
    rt.log.append([Envelope(f"default/*/lp/test-{k}", "default", MANY_DEVICES, "test",
                            "line_protocol", "\n".join(lines[k::4]).encode(), now_us)
                   for k in range(4)])
    drain(rt)
    before = tables(rt)
    assert {d for d, *_ in before["hot"]} == {"aq-1", "aq-2"}
    for device in ("aq-1", "aq-2"):
        rt.registry.upsert([Device(id=device, lat=52.1, lon=5.1,
                                   calibration={"pm10": Calibration(offset=1.0)})])
    rt._context_checked = 0.0
    assert replay(rt, device="aq-2")["envelopes"] == 4
    after = tables(rt)
    changed = {(d, m) for (d, m, ts, v, _), (_, _, _, w, _) in zip(
        before["hot"], after["hot"], strict=True) if v != w}
    assert changed == {("aq-2", "pm10")}
    assert len(after["lake"]) == len(before["lake"])
    lake_changed = {(b[1], b[2]) for b, a in zip(before["lake"], after["lake"], strict=True)
                    if b != a}
    assert lake_changed == {("aq-2", "pm10")}


def hot_rows(items: list[tuple[str, int, float, int]]) -> pa.Table:
    """HOT_SCHEMA rows from (device, minute, value, log_offset)."""
    t0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    ts = [t0 + timedelta(minutes=m) for _, m, _, _ in items]
    n = len(items)
    return pa.Table.from_pydict({
        "tenant": ["t"] * n, "device_id": [d for d, _, _, _ in items],
        "metric": ["pm2_5"] * n, "ts": ts, "value": [v for _, _, v, _ in items],
        "quality": [0] * n, "received_at": ts, "lat": [None] * n, "lon": [None] * n,
        "log_offset": [o for _, _, _, o in items]}, schema=HOT_SCHEMA)


@pytest.fixture(params=["memory", "duckdb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    s = MemoryStore() if request.param == "memory" else DuckDBStore(tmp_path / "hot.duckdb")
    yield s
    s.close()


def test_replace_span_contract(store: Any) -> None:
    store.write(hot_rows([("a", 0, 1.0, 1), ("a", 1, 2.0, 2), ("b", 0, 5.0, 2),
                          ("a", 2, 3.0, 3)]))
    inserted = store.replace_span(1, 2, hot_rows([("a", 0, 10.0, 1), ("a", 1, 20.0, 2),
                                                  ("a", 2, 99.0, 2)]), ("a",))
    assert inserted == 2  # minute 2 is held by offset 3, outside the span: kept
    rows = {(r["device_id"], r["value"]) for r in store.span_readings(1, 9).to_pylist()}
    assert rows == {("a", 10.0), ("a", 20.0), ("a", 3.0), ("b", 5.0)}
    latest = {r["device_id"]: r["value"] for r in store.latest("t").to_pylist()}
    assert latest == {"a": 3.0, "b": 5.0}
    store.replace_span(3, 3, hot_rows([("a", 2, 30.0, 3)]), ("a",))
    assert {r["device_id"]: r["value"] for r in store.latest("t").to_pylist()}["a"] == 30.0
    store.replace_span(3, 3, hot_rows([]), ("a",))  # offset 3 now produces nothing
    assert {r["device_id"]: r["value"] for r in store.latest("t").to_pylist()}["a"] == 20.0
    # the insert path still sees every stored key: rewriting them stores nothing
    assert store.write(hot_rows([("a", 0, 7.0, 8), ("a", 1, 7.0, 8), ("b", 0, 7.0, 8)])) == 0
    assert store.write(hot_rows([("a", 2, 7.0, 9)])) == 1
    assert store.count() == 4


def test_replay_with_the_lake_on_s3_says_it_is_not_available() -> None:
    from types import SimpleNamespace

    from sensorlake.errors import ConfigError
    from sensorlake.ops.replay import replay_range
    now = datetime.now(UTC)
    with pytest.raises(ConfigError, match="S3"):
        replay_range(SimpleNamespace(lake=object()), now - timedelta(hours=1), now)
