"""The v1 API beyond ingest: devices CRUD (strict models), latest with AQI category, the map
layer, readings (several metrics, quality, paging, auto resolution, point cap), streamed
exports including lake-answered ranges, limits (rate, body, timeout), login and tokens."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from world import PASSWORD, World

from sensorlake.auth.tokens import Role
from sensorlake.errors import QueryTimeout
from sensorlake.model import READING_SCHEMA, Quality
from sensorlake.store.duckdb import _deadline

T0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=3)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    built = World(tmp_path / "data")
    yield built
    built.close()


def owner(world: World) -> dict[str, str]:
    return world.headers("a", "owner")


def readings(device: str, metric: str, values: list[float], start: datetime = T0,
             step: timedelta = timedelta(minutes=1), quality: list[int] | None = None,
             lat: float = 52.1, lon: float = 5.1) -> pa.Table:
    rows = [{"tenant": device[0], "device_id": device, "metric": metric,
             "ts": start + i * step, "value": v, "quality": (quality or [0] * len(values))[i],
             "received_at": start + i * step, "lat": lat, "lon": lon}
            for i, v in enumerate(values)]
    return pa.Table.from_pylist(rows, schema=READING_SCHEMA)


# -- devices ---------------------------------------------------------------------------------

def test_device_crud_with_strict_models_and_audit(world: World) -> None:
    client, headers = world.client, owner(world)
    new = {"id": "a-new", "type": "energy_meter", "name": "Meter", "lat": 52.0, "lon": 5.0,
           "tags": {"site": "x"}, "public": True}
    created = client.post("/api/v1/devices", json=new, headers=headers)
    assert created.status_code == 201, created.text
    assert created.json() == {**new, "alt": None, "calibration": {}}
    assert client.post("/api/v1/devices", json=new, headers=headers).status_code == 409
    unknown = client.post("/api/v1/devices", json={"id": "a-x", "colour": "red"},
                          headers=headers)
    assert unknown.status_code == 422 and "colour" in unknown.text
    assert client.post("/api/v1/devices", json={"id": "bad id!"},
                       headers=headers).status_code == 422
    assert client.patch("/api/v1/devices/a-new", json={"tenant": "b"},
                        headers=headers).status_code == 422  # no moving tenants
    patched = client.patch("/api/v1/devices/a-new", json={"name": "Meter 2", "public": False},
                           headers=headers)
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] == "Meter 2" and patched.json()["type"] == "energy_meter"
    assert patched.json()["public"] is False
    got = client.get("/api/v1/devices/a-new", headers=headers).json()
    assert got["name"] == "Meter 2" and got["tags"] == {"site": "x"}
    assert client.delete("/api/v1/devices/a-new", headers=headers).status_code == 204
    assert client.get("/api/v1/devices/a-new", headers=headers).status_code == 404
    actions = [r["action"] for r in client.get("/api/v1/audit", headers=headers).json()
               ["results"]]
    assert actions[:3] == ["device.delete", "device.update", "device.create"]


# -- latest and map --------------------------------------------------------------------------

def test_latest_carries_aqi_category_and_colour(world: World) -> None:
    hot = world.runtime.hot
    hot.write(readings("a-aq-1", "aqi_us", [20, 57]))
    hot.write(readings("a-aq-1", "aqi_uk", [3]))
    hot.write(readings("a-aq-2", "aqi_us", [180]))
    body = world.client.get("/api/v1/latest", headers=owner(world)).json()
    by = {(r["device_id"], r["metric"]): r for r in body["results"]}
    assert by[("a-aq-1", "aqi_us")]["value"] == 57
    assert (by[("a-aq-1", "aqi_us")]["category"], by[("a-aq-1", "aqi_us")]["colour"]) == (
        "Moderate", "#FFFF00")
    assert by[("a-aq-2", "aqi_us")]["category"] == "Unhealthy"
    assert by[("a-aq-1", "aqi_uk")]["category"] == "Low"
    only = world.client.get("/api/v1/latest", params={"metric": "aqi_us", "device": "a-aq-2"},
                            headers=owner(world)).json()["results"]
    assert [(r["device_id"], r["value"]) for r in only] == [("a-aq-2", 180)]


def test_map_layer_is_geojson_with_bbox(world: World) -> None:
    hot = world.runtime.hot
    hot.write(readings("a-aq-1", "aqi_us", [40], lat=52.09, lon=5.12))
    hot.write(readings("a-energy-1", "power", [100.0], lat=48.85, lon=2.35))  # moved (GPS)
    layer = world.client.get("/api/v1/map", headers=owner(world)).json()
    assert layer["type"] == "FeatureCollection"
    features = {f["id"]: f for f in layer["features"]}
    assert features["a-aq-1"]["geometry"] == {"type": "Point", "coordinates": [5.12, 52.09]}
    assert features["a-aq-1"]["properties"]["colour"] == "#00E400"
    assert features["a-aq-2"]["properties"]["value"] is None  # registered, no data: grey
    assert features["a-aq-2"]["properties"]["colour"] == "#9E9E9E"
    assert features["a-energy-1"]["geometry"]["coordinates"] == [2.35, 48.85]
    assert layer["meta"]["without_location"] == 1  # a-spare has none
    boxed = world.client.get("/api/v1/map", params={"bbox": "5.0,52.0,5.2,52.2"},
                             headers=owner(world)).json()
    assert {f["id"] for f in boxed["features"]} == {"a-aq-1", "a-aq-2"}  # energy-1 moved
    assert world.client.get("/api/v1/map", params={"bbox": "1,2,3"},
                            headers=owner(world)).status_code == 422


# -- readings --------------------------------------------------------------------------------

def test_readings_metrics_quality_paging(world: World) -> None:
    hot = world.runtime.hot
    hot.write(readings("a-aq-1", "pm2_5", [float(i) for i in range(30)],
                       quality=[Quality.SPIKE if i % 10 == 0 else 0 for i in range(30)]))
    hot.write(readings("a-aq-1", "pm10", [float(100 + i) for i in range(30)]))
    window = {"from": T0.isoformat(), "to": (T0 + timedelta(hours=1)).isoformat()}
    url = "/api/v1/devices/a-aq-1/readings"
    both = world.client.get(url, params={"metric": ["pm2_5", "pm10"], **window},
                            headers=owner(world)).json()
    assert both["meta"]["count"] == 60 and {r["metric"] for r in both["results"]} == {
        "pm2_5", "pm10"}
    good = world.client.get(url, params={"metric": "pm2_5", "quality": "good", **window},
                            headers=owner(world)).json()["results"]
    assert [r["value"] for r in good] == [float(i) for i in range(30) if i % 10]
    pages, page = [], None
    while True:
        params = {"metric": ["pm2_5", "pm10"], "limit": 7, **window,
                  **({"page": page} if page else {})}
        body = world.client.get(url, params=params, headers=owner(world)).json()
        pages.extend((r["metric"], r["ts"]) for r in body["results"])
        page = body["meta"]["next"]
        if page is None:
            break
    assert len(pages) == 60 and len(set(pages)) == 60
    assert world.client.get(url, params={"metric": "pm2_5", "page": "garbage"},
                            headers=owner(world)).status_code == 422


def test_auto_resolution_and_point_cap(world: World) -> None:
    world.runtime.settings.api.max_points = 1000
    hot = world.runtime.hot
    hot.write(readings("a-aq-1", "pm2_5", [1.0] * 180))
    url = "/api/v1/devices/a-aq-1/readings"
    auto = world.client.get(url, params={"metric": "pm2_5", "from": "-24h", "every": "auto"},
                            headers=owner(world)).json()
    assert auto["meta"]["every"] == "5m"  # 288 buckets <= auto_points (600)
    too_many = world.client.get(url, params={"metric": "pm2_5", "from": "-30d", "every": "1m"},
                                headers=owner(world))
    assert too_many.status_code == 422
    assert "every=1h" in too_many.json()["detail"], too_many.text
    over = world.client.get(url, params={"metric": "pm2_5", "limit": 5000},
                            headers=owner(world))
    assert over.status_code == 422 and "api.max_points" in over.text


def test_query_timeout_cancels_the_query(tmp_path: Path) -> None:
    conn = duckdb.connect()
    cur = conn.cursor()
    started = datetime.now(UTC)
    with pytest.raises(QueryTimeout, match=r"0\.2 s"), _deadline(cur, 0.2):
        cur.sql("SELECT count(*) FROM range(100000000000) a").fetchall()
    assert datetime.now(UTC) - started < timedelta(seconds=20)


def test_timeout_answers_504(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    def slow(query: object, timeout: float | None = None) -> None:
        raise QueryTimeout(f"the query ran longer than {timeout:g} s")

    monkeypatch.setattr(world.runtime.hot, "readings", slow)
    response = world.client.get("/api/v1/devices/a-aq-1/readings", params={"metric": "pm2_5"},
                                headers=owner(world))
    assert response.status_code == 504 and "10 s" in response.text


# -- exports ---------------------------------------------------------------------------------

def test_exports_stream_every_format_including_the_lake(tmp_path: Path) -> None:
    """Readings 40 days old, deleted from the hot store by retention, still export (lake)."""
    world = World(tmp_path / "data", start_worker=True)
    try:
        old = datetime.now(UTC).replace(microsecond=0) - timedelta(days=40)
        lines = b"\n".join(orjson.dumps({"device": "a-aq-1", "ts": (old + timedelta(
            seconds=i)).isoformat(), "readings": {"pm2_5": float(i)}}) for i in range(50))
        token = world.tenants["a"].tokens["ingest"]
        response = world.client.post("/api/v1/ingest", content=lines, headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"})
        assert response.status_code == 200, response.text
        runtime = world.runtime
        deadline = datetime.now(UTC) + timedelta(seconds=30)
        while runtime.log.stats().acked.get(runtime.worker.consumer, 0) < 50:
            assert datetime.now(UTC) < deadline, "the lake was not written"
            time.sleep(0.05)
        assert runtime.hot.apply_retention() > 0  # now only the lake has them
        assert runtime.hot.count("a") == 0
        params = {"metric": "pm2_5", "device": "a-aq-1", "from": (old - timedelta(
            minutes=1)).isoformat(), "to": (old + timedelta(minutes=5)).isoformat()}
        headers = world.headers("a", "owner")
        csv = world.client.get("/api/v1/export", params={**params, "format": "csv"},
                               headers=headers)
        assert csv.status_code == 200, csv.text
        assert csv.headers["content-type"].startswith("text/csv")
        lines_out = csv.text.strip().splitlines()
        assert lines_out[0] == '"device_id","metric","ts","value","count"'
        assert len(lines_out) == 51
        nd = world.client.get("/api/v1/export", params={**params, "format": "ndjson"},
                              headers=headers)
        rows = [orjson.loads(line) for line in nd.text.splitlines()]
        assert [r["value"] for r in rows] == [float(i) for i in range(50)]
        assert rows[0]["ts"].endswith("Z")
        parquet = world.client.get("/api/v1/export", params={**params, "format": "parquet"},
                                   headers=headers)
        table = pq.read_table(io.BytesIO(parquet.content))
        assert table.num_rows == 50 and table.column("value").to_pylist()[-1] == 49.0
        bucketed = world.client.get("/api/v1/export", params={**params, "every": "1m",
                                                              "agg": "count"},
                                    headers=headers).text.strip().splitlines()
        assert sum(int(float(line.split(",")[3])) for line in bucketed[1:]) == 50
    finally:
        world.close()


# -- limits ----------------------------------------------------------------------------------

def test_rate_limit_answers_429_with_retry_after(world: World) -> None:
    token, _ = world.runtime.tokens.create(Role.OWNER, "a", rate_per_minute=12)
    headers = {"Authorization": f"Bearer {token}"}
    statuses = [world.client.get("/api/v1/devices", headers=headers) for _ in range(4)]
    assert [r.status_code for r in statuses[:2]] == [200, 200]
    limited = statuses[-1]
    assert limited.status_code == 429, [r.status_code for r in statuses]
    assert int(limited.headers["retry-after"]) >= 1
    other = world.client.get("/api/v1/devices", headers=owner(world))
    assert other.status_code == 200  # per token


def test_json_body_limit_is_413(world: World) -> None:
    world_limit = world.runtime.settings.api.max_json_body_bytes
    body = orjson.dumps({"id": "a-big", "name": "x" * (world_limit + 10)})
    response = world.client.post("/api/v1/devices", content=body, headers={
        **owner(world), "Content-Type": "application/json"})
    assert response.status_code == 413, response.text


# -- login and tokens ------------------------------------------------------------------------

def test_login_sessions_and_tokens(world: World) -> None:
    client = world.client
    wrong = client.post("/api/v1/auth/login", json={"tenant": "a", "username": "a-owner",
                                                     "password": "nope"})
    nobody = client.post("/api/v1/auth/login", json={"tenant": "a", "username": "ghost",
                                                      "password": PASSWORD})
    assert wrong.status_code == nobody.status_code == 401
    assert wrong.json() == nobody.json()  # nothing tells which part was wrong
    token = world.login("a", "a-owner")
    me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert me["user"] == "a-owner" and me["role"] == "owner" and me["kind"] == "session"
    created = client.post("/api/v1/tokens", json={"role": "guest", "scopes": ["read"]},
                          headers={"Authorization": f"Bearer {token}"})
    assert created.status_code == 201, created.text
    assert created.json()["token"].startswith("slk_") and created.json()["scopes"] == ["read"]
    bad = client.post("/api/v1/tokens", json={"role": "ingest", "scopes": ["admin"]},
                      headers={"Authorization": f"Bearer {token}"})
    assert bad.status_code == 422
    guest = created.json()
    assert client.get("/api/v1/auth/me", headers={
        "Authorization": f"Bearer {guest['token']}"}).json()["role"] == "guest"
    listed = client.get("/api/v1/tokens", headers={"Authorization": f"Bearer {token}"}).json()
    assert all("token" not in r and "hash" not in r for r in listed["results"])
    used = {r["id"]: r["last_used_at"] for r in listed["results"]}
    assert used[guest["id"]] is not None
    assert client.post("/api/v1/auth/logout",
                       headers={"Authorization": f"Bearer {token}"}).status_code == 204
    world.runtime.tokens.forget()
    assert client.get("/api/v1/auth/me", headers={
        "Authorization": f"Bearer {token}"}).status_code == 401
