"""End to end: readings written to the DuckDB hot store of a Runtime, the AQI series asked for
through GET /api/v1/devices/{id}/readings and GET /api/v1/readings."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))  # the API tests' World
from world import World

from sensorlake.model import READING_SCHEMA, Quality
from sensorlake.registry import Device

EPA_EXAMPLE = [50, 80, 75, 90, 82, 53, 64, 74, 21, 10, 16, 13]
LAST = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
FIRST = LAST - timedelta(hours=11)
QUARTER = timedelta(minutes=15)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    built = World(tmp_path / "data")
    yield built
    built.close()


def quarter_hours(device: str, metric: str, per_hour: list[float], start: datetime = FIRST,
                  quality: int = 0) -> pa.Table:
    """Four readings an hour, each hour at its value (so the hourly mean is that value)."""
    rows = [{"tenant": device[0], "device_id": device, "metric": metric,
             "ts": start + timedelta(hours=h) + q * QUARTER, "value": v, "quality": quality,
             "received_at": start, "lat": 52.1, "lon": 5.1}
            for h, v in enumerate(per_hour) for q in range(4)]
    return pa.Table.from_pylist(rows, schema=READING_SCHEMA)


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def get(world: World, url: str, **params: object) -> dict:
    response = world.client.get(url, params=params, headers=world.headers("a", "owner"))
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_nowcast_through_the_device_readings_route(world: World) -> None:
    hot = world.runtime.hot
    hot.write(quarter_hours("a-aq-1", "pm2_5", [float(c) for c in EPA_EXAMPLE]))
    hot.write(quarter_hours("a-aq-1", "pm10", [30.0] * 12))
    hot.write(quarter_hours("a-aq-1", "pm2_5", [900.0], start=LAST, quality=Quality.SPIKE)
              .slice(0, 1).set_column(3, "ts", pa.array([LAST + timedelta(minutes=7)],
                                                          READING_SCHEMA.field("ts").type)))
    body = get(world, "/api/v1/devices/a-aq-1/readings", metric="aqi_us_nowcast", every="1h",
               **{"from": iso(FIRST - 2 * timedelta(hours=1)), "to": iso(LAST + timedelta(
                   hours=1))})
    rows = {r["ts"]: r for r in body["results"]}
    assert body["meta"]["count"] == 14 and body["meta"]["metrics"] == ["aqi_us_nowcast"]
    assert rows[iso(LAST)] == {
        "ts": iso(LAST), "value": 66.0, "count": 12, "pollutant": "pm2_5",
        "category": "Moderate", "colour": "#FFFF00", "status": "ok", "pm2_5_nowcast": 17.4,
        "pm10_nowcast": 30.0}  # the SPIKE-flagged 900 did not enter the hourly mean
    for hour in (FIRST - timedelta(hours=2), FIRST - timedelta(hours=1), FIRST):
        assert rows[iso(hour)]["value"] is None
        assert rows[iso(hour)]["status"] == "insufficient data"
        assert rows[iso(hour)]["category"] is None and rows[iso(hour)]["colour"] is None
    second = rows[iso(FIRST + timedelta(hours=1))]  # two hours: 80 and 50, w = 0.625
    assert second["status"] == "ok"
    assert (second["value"], second["count"], second["category"], second["colour"],
            second["pm2_5_nowcast"]) == (160.0, 2, "Unhealthy", "#FF0000", 68.4)
    assert rows[iso(FIRST)]["count"] == 1  # the docs' example response


def test_daqi_and_stored_metrics_through_the_readings_route(world: World) -> None:
    hot = world.runtime.hot
    hot.write(quarter_hours("a-aq-1", "pm2_5", [float(c) for c in EPA_EXAMPLE]))
    day = [40.0] * 24
    hot.write(quarter_hours("a-aq-2", "pm10", day, start=LAST - timedelta(hours=23)))
    window = {"from": iso(LAST), "to": iso(LAST + timedelta(hours=1))}
    body = get(world, "/api/v1/readings", metric="aqi_uk_daqi", **window)
    rows = {r["device_id"]: r for r in body["results"]}
    assert set(rows) == {"a-aq-1", "a-aq-2"}  # the energy meter has no PM: no rows
    assert "count" not in rows["a-aq-1"]  # the route shows count only with `every`
    assert rows["a-aq-1"] | {"ts": None} == {
        "device_id": "a-aq-1", "metric": "aqi_uk_daqi", "ts": None, "value": None,
        "pollutant": None, "category": None, "colour": None,
        "status": "insufficient data", "pm2_5_24h": None, "pm10_24h": None}
    assert (rows["a-aq-2"]["value"], rows["a-aq-2"]["category"], rows["a-aq-2"]["colour"],
            rows["a-aq-2"]["pollutant"], rows["a-aq-2"]["pm10_24h"]) == (
        3.0, "Low", "#31CF00", "pm10", 40.0)
    both = get(world, "/api/v1/devices/a-aq-1/readings", metric=["pm2_5", "aqi_us_nowcast"],
               every="1h", **window)["results"]
    assert sorted((r["metric"], r["value"], r["category"] or "") for r in both) == [
        ("aqi_us_nowcast", 66.0, "Moderate"), ("pm2_5", 13.0, "")]


def test_daily_aqi_on_the_device_local_day(world: World) -> None:
    rt = world.runtime
    rt.registry.upsert([Device(id="a-aq-ny", tenant="a", type="air_quality",
                               tags={"tz": "America/New_York"})])
    rt.auth.authorizer.refresh()
    ny = ZoneInfo("America/New_York")
    local = (datetime.now(ny) - timedelta(days=2)).replace(hour=0, minute=0, second=0,
                                                            microsecond=0)
    midnight = local.astimezone(UTC)
    next_midnight = (local + timedelta(days=1)).replace(hour=0).astimezone(UTC)
    day_hours = round((next_midnight - midnight) / timedelta(hours=1))  # 23 or 25 on DST days
    rt.hot.write(quarter_hours("a-aq-ny", "pm2_5", [5.0] * 3 + [20.0] * day_hours + [5.0] * 3,
                               start=midnight - timedelta(hours=3)))
    body = get(world, "/api/v1/devices/a-aq-ny/readings", metric="aqi_us_daily",
               **{"from": iso(midnight + timedelta(hours=12)),
                  "to": iso(midnight + timedelta(hours=13))})
    assert [(r["ts"], r["value"], r["pm2_5_24h"], r["category"], r["status"])
            for r in body["results"]] == [(iso(midnight), 71.0, 20.0, "Moderate", "ok")]


def test_pages_of_a_derived_series_cover_it_once(world: World) -> None:
    """`meta.next` of a cut derived series leads to the next rows, never the same page."""
    world.runtime.hot.write(quarter_hours("a-aq-1", "pm2_5", [float(c) for c in EPA_EXAMPLE]))
    window = {"from": iso(FIRST), "to": iso(LAST + timedelta(hours=1)), "every": "1h"}
    whole = get(world, "/api/v1/devices/a-aq-1/readings",
                metric=["pm2_5", "aqi_us_nowcast"], **window)["results"]
    assert len(whole) == 24
    seen, page = [], None
    for _ in range(10):
        body = get(world, "/api/v1/devices/a-aq-1/readings", metric=["pm2_5",
                   "aqi_us_nowcast"], limit=5, **window, **({"page": page} if page else {}))
        seen += body["results"]
        page = body["meta"]["next"]
        if page is None:
            break
    assert [(r["metric"], r["ts"]) for r in seen] == [(r["metric"], r["ts"]) for r in whole]
