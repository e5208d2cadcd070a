"""End to end: readings in the DuckDB hot store of a Runtime, cost and energy asked through
GET /api/v1/devices/{id}/readings and /api/v1/readings, with the local-day buckets of the
autumn DST change (a 25-hour day in Europe/London)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from sensorlake.api.app import create_app
from sensorlake.auth.tokens import Role
from sensorlake.config import load_settings
from sensorlake.model import READING_SCHEMA
from sensorlake.registry import Device
from sensorlake.runtime import Runtime

TARIFFS = """
currency: GBP
co2e_kg_per_kwh: 0.25
tariffs:
  home:
    price: 0.10
    periods: [{days: all, hours: "17:00-21:00", price: 0.30}]
  site-flat: {price: 0.50}
assign:
  tenants: {t: home}
  sites: {north: site-flat}
"""
DAY = datetime(2026, 10, 25, 0, 0, tzinfo=UTC)  # Sunday; 01:00 BST -> 01:00 GMT again
START = DAY - timedelta(hours=1)                 # local midnight (BST) as UTC


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    data = tmp_path / "data"
    data.mkdir()
    (data / "tariffs.yaml").write_text(TARIFFS)
    settings = load_settings(data_dir=data, hot={"retention_days": 3650},
                             time={"timezone": "Europe/London"})
    runtime = Runtime(settings)
    runtime.registry.upsert([Device(id="m1", tenant="t", type="energy_meter"),
                             Device(id="m2", tenant="t", type="energy_meter",
                                    tags={"site": "north"})])
    token, _ = runtime.tokens.create(Role.OWNER, "t")
    runtime.auth.authorizer.refresh()
    hours = 26 + 24
    rows = [{"tenant": "t", "device_id": device, "metric": "energy",
             "ts": START - timedelta(hours=1) + i * timedelta(hours=1), "value": 1000.0 + i,
             "quality": 0, "received_at": START, "lat": None, "lon": None}
            for device in ("m1", "m2") for i in range(hours + 1)]
    runtime.hot.write(pa.Table.from_pylist(rows, schema=READING_SCHEMA))
    with TestClient(create_app(runtime)) as client:
        yield client, {"Authorization": f"Bearer {token}"}
    runtime.close()


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def test_daily_cost_and_energy_through_the_api(api: tuple[TestClient, dict[str, str]]) -> None:
    client, headers = api
    end = START + timedelta(hours=49)  # two local days: 25 h + 24 h
    params = {"from": iso(START), "to": iso(end), "every": "1d"}
    energy = client.get("/api/v1/devices/m1/readings", headers=headers,
                        params={**params, "metric": "energy_delta"})
    assert energy.status_code == 200, energy.text
    days = energy.json()["results"]
    assert [d["ts"] for d in days] == [iso(START), iso(START + timedelta(hours=25))]
    assert [d["value"] for d in days] == [25.0, 24.0]
    assert days[0]["status"] == "ok"

    cost = client.get("/api/v1/devices/m1/readings", headers=headers,
                      params={**params, "metric": "cost"})
    assert cost.status_code == 200, cost.text
    results = cost.json()["results"]
    # each local day has 4 peak hours (17:00-21:00 GMT) at 0.30, the rest at 0.10
    assert [r["value"] for r in results] == pytest.approx([4 * 0.3 + 21 * 0.1,
                                                           4 * 0.3 + 20 * 0.1])
    assert {r["currency"] for r in results} == {"GBP"}


def test_every_device_in_one_request_with_site_tariffs(
        api: tuple[TestClient, dict[str, str]]) -> None:
    client, headers = api
    response = client.get("/api/v1/readings", headers=headers, params=[
        ("metric", "cost"), ("metric", "co2e"), ("from", iso(START)),
        ("to", iso(START + timedelta(hours=25))), ("every", "1d")])
    assert response.status_code == 200, response.text
    rows = {(r["device_id"], r["metric"]): r for r in response.json()["results"]}
    assert rows[("m2", "cost")]["value"] == pytest.approx(25 * 0.5)   # site beats tenant
    assert rows[("m1", "co2e")]["value"] == pytest.approx(25 * 0.25)
    assert rows[("m2", "co2e")]["status"] == "ok"


def test_per_reading_deltas_and_stored_metrics_together(
        api: tuple[TestClient, dict[str, str]]) -> None:
    client, headers = api
    response = client.get("/api/v1/devices/m1/readings", headers=headers, params=[
        ("metric", "energy"), ("metric", "energy_delta"), ("from", iso(START)),
        ("to", iso(START + timedelta(hours=3)))])
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    deltas = [r for r in results if r["metric"] == "energy_delta"]
    stored = [r for r in results if r["metric"] == "energy"]
    assert [r["value"] for r in deltas] == [1.0, 1.0, 1.0]
    assert [r["ts"] for r in deltas] == [iso(START + timedelta(hours=h)) for h in (1, 2, 3)]
    assert len(stored) == 3


def test_a_broken_tariffs_file_answers_what_to_fix(tmp_path: Path,
                                                   api: tuple[TestClient, dict[str, str]]
                                                   ) -> None:
    client, headers = api
    (tmp_path / "data" / "tariffs.yaml").write_text("tariffs: {home: {price: cheap}}")
    response = client.get("/api/v1/devices/m1/readings", headers=headers, params={
        "metric": "cost", "from": iso(START), "to": iso(START + timedelta(hours=3))})
    assert response.status_code == 422
    assert "tariff 'home', field price" in response.text
    energy = client.get("/api/v1/devices/m1/readings", headers=headers, params={
        "metric": "energy_delta", "from": iso(START), "to": iso(START + timedelta(hours=3))})
    assert energy.status_code == 200  # energy does not need tariffs


def test_a_wrong_tz_tag_is_422_naming_the_device(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data")
    runtime = Runtime(settings)
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        Device(id="m9", tenant="t", tags={"tz": "Mars/Olympus"})  # refused when registered
    # ... but a catalog written before that check may hold one: reads name it
    runtime.registry.upsert([Device.model_validate(
        {"id": "m9", "tenant": "t", "tags": {"tz": "Mars/Olympus"}}, context={"stored": True})])
    token, _ = runtime.tokens.create(Role.OWNER, "t")
    runtime.auth.authorizer.refresh()
    try:
        with TestClient(create_app(runtime)) as client:
            got = client.get("/api/v1/devices/m9/readings",
                             params={"metric": "energy_delta", "from": "-1d", "every": "1h"},
                             headers={"Authorization": f"Bearer {token}"})
        assert got.status_code == 422
        assert "device 'm9'" in got.text and "Mars/Olympus" in got.text
    finally:
        runtime.close()
