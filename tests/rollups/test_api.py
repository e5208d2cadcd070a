"""Through the readings routes: `meta.source` names the rollup, values equal the raw answer,
rollup rows carry coverage, revised and final, and `every=1mo` works."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "api"))
from rollup_support import table
from world import World

T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=3)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    built = World(tmp_path / "data")
    yield built
    built.close()


def test_readings_route_serves_rollups_equal_to_raw(world: World) -> None:
    rows = [("a-aq-1", "pm2_5", T0 + timedelta(seconds=30 * i), float(i % 37))
            for i in range(6 * 24 * 120)]
    world.runtime.hot.write(table(rows, tenant="a"))
    headers = world.headers("a", "owner")
    url = "/api/v1/devices/a-aq-1/readings"
    window = {"metric": "pm2_5", "from": (T0 + timedelta(minutes=7)).isoformat(),
              "to": (T0 + timedelta(days=2, minutes=3)).isoformat()}
    for every in ("1h", "10m", "1d"):  # not refreshed yet: the dirty part is read from raw
        for agg in ("mean", "count"):
            fast, raw = (world.client.get(url, params={**window, "every": every, "agg": agg,
                                                        **extra}, headers=headers).json()
                         for extra in ({}, {"quality": "good"}))
            assert [(r["ts"], r["count"]) for r in fast["results"]] == [
                (r["ts"], r["count"]) for r in raw["results"]], (every, agg)
            for got, want in zip(fast["results"], raw["results"], strict=True):
                assert got["value"] == pytest.approx(want["value"], rel=1e-9)
    world.runtime.hot.refresh_rollups()  # what the worker does every rollups.refresh_seconds
    for every, source in (("1h", "rollup_1h"), ("10m", "rollup_1m"), ("1d", "rollup_1d")):
        for agg in ("mean", "max", "count", "last"):
            fast = world.client.get(url, params={**window, "every": every, "agg": agg},
                                    headers=headers).json()
            raw = world.client.get(url, params={**window, "every": every, "agg": agg,
                                                "quality": "good"}, headers=headers).json()
            assert fast["meta"]["source"] == source and raw["meta"]["source"] == "raw"
            assert [(r["ts"], r["count"]) for r in fast["results"]] == [
                (r["ts"], r["count"]) for r in raw["results"]], (every, agg)
            for got, want in zip(fast["results"], raw["results"], strict=True):
                assert got["value"] == pytest.approx(want["value"], rel=1e-9)
            assert {"coverage", "revised", "final"} <= set(fast["results"][0])
    hourly = world.client.get(url, params={**window, "every": "1h"}, headers=headers).json()
    inner = hourly["results"][1]  # a whole hour: 120 readings at a 30 s interval
    assert inner["count"] == 120 and inner["coverage"] == 100.0 and inner["final"] is True
    assert inner["revised"] is False
    monthly = world.client.get("/api/v1/readings", params={
        "metric": "pm2_5", "from": "-400d", "every": "1mo", "agg": "count"},
        headers=headers).json()
    assert monthly["meta"]["source"] == "rollup_1mo" and monthly["meta"]["every"] == "1mo"
    assert sum(r["value"] for r in monthly["results"]) == len(rows)
    raw_rows = world.client.get(url, params=window, headers=headers).json()
    assert raw_rows["meta"]["source"] == "raw" and "coverage" not in raw_rows["results"][0]


def test_worker_refreshes_rollups_after_a_batch(tmp_path: Path) -> None:
    world = World(tmp_path / "data", rollups={"refresh_seconds": 0})
    try:
        at = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=10)
        body = {"device": "a-aq-1", "batch": [
            {"ts": (at + timedelta(seconds=10 * i)).isoformat(), "readings": {"pm2_5": 1.0 * i}}
            for i in range(12)]}
        response = world.client.post("/api/v1/ingest", json=body,
                                     headers=world.headers("a", "owner"))
        assert response.status_code == 200, response.text
        worker = world.runtime.worker
        assert worker.step(wait=0.5) == 1  # starts a refresh on the rollup thread
        worker.refresh_rollups_if_due(force=True)  # waits for it (nothing left to do after)
        rows = world.runtime.hot.rollup_rows("1m").to_pylist()
        assert [(r["bucket"], r["count"], r["sum"]) for r in rows if r["metric"] == "pm2_5"] == [
            (at, 6, 15.0), (at + timedelta(minutes=1), 6, 51.0)]
        assert worker.stats.stage_rows["rollups"] == len(rows)
        assert "rollups" in worker.stats.stage_seconds
    finally:
        world.close()


def test_rollups_disabled_reads_raw(tmp_path: Path) -> None:
    world = World(tmp_path / "data", rollups={"enabled": False})
    try:
        world.runtime.hot.write(table([("a-aq-1", "pm2_5", T0, 1.0)], tenant="a"))
        body = world.client.get("/api/v1/devices/a-aq-1/readings", params={
            "metric": "pm2_5", "from": "-4d", "every": "1h"},
            headers=world.headers("a", "owner")).json()
        assert body["meta"]["source"] == "raw" and body["results"][0]["count"] == 1
    finally:
        world.close()
