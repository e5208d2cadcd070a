"""Sensor.Community: the open-data codec, the poller against a recorded file served by a
local HTTP server (a second poll stores nothing new), the delivery route, the CLI on its own,
and the airrohr firmware's "send to own API" POST."""

from __future__ import annotations

import base64
import http.server
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import orjson
import pytest
from sources_support import Api, CodecSetup, entries, fixture, poll, rows

from sensorlake.auth.tokens import Role
from sensorlake.decode import get_codec
from sensorlake.ingest.pollers.sensor_community import (
    RuntimeTarget,
    ServerTarget,
    poll_once,
    split_records,
)
from sensorlake.registry import Device

SENSORLAKE = str(Path(sys.executable).parent / "sensorlake")
TS_2020 = 1_579_703_626_000_000  # 2020-01-22 14:33:46 UTC


class Files(http.server.ThreadingHTTPServer):
    """Serves `files[path]`; counts requests."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests = 0
        files = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                files.requests += 1
                body = files.files.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def files() -> Iterator[Files]:
    server = Files()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def decoded(*records: dict, **overrides: object) -> tuple[list[tuple], list[dict]]:
    data = split_records(orjson.dumps(list(records)), "t1", "test", 0)
    table = entries([e.payload for e in data.envelopes], "sensor_community",
                    [e.device_id for e in data.envelopes])
    batch = get_codec("sensor_community").decode(table)
    return rows(batch.readings, "device_id", "metric", "value"), batch.rejects.to_pylist()


# -- the codec --------------------------------------------------------------------------------

def test_recorded_records_map_p1_p2_and_pressure(codecs: CodecSetup) -> None:
    codecs()
    records = orjson.loads(fixture("sensor_community/data.json"))
    got, rejects = decoded(*records)
    assert ("sc-1356", "pm10", 0.2) in got and ("sc-1356", "pm2_5", 0.2) in got
    assert ("sc-11654", "pm10", 7.25) in got and ("sc-11654", "pm2_5", 1.75) in got
    assert ("sc-32075", "pressure", pytest.approx(967.923)) in got
    assert ("sc-11655", "temperature", 0.06) in got and ("sc-36", "humidity", 39.5) in got
    assert not any(m == "pressure_at_sealevel" for _, m, _ in got) and rejects == []


def test_timestamps_location_and_extra_value_types(codecs: CodecSetup) -> None:
    codecs(sensor_community={"value_types": {"pressure_at_sealevel": "pressure_sealevel",
                                             "P2": ""}})
    record = orjson.loads(fixture("sensor_community/data.json"))[4]
    record["sensordatavalues"].append({"value_type": "P2", "value": "3"})
    data = split_records(orjson.dumps([record]), "t1", "test", 0)
    batch = get_codec("sensor_community").decode(entries(
        [data.envelopes[0].payload], "sensor_community", "sc-32075"))
    assert batch.readings.column("ts").cast("int64").unique().to_pylist() == [
        TS_2020 - 2_000_000]
    assert batch.readings.column("lat").unique().to_pylist() == [50.937]
    assert ("pressure_sealevel", 98897.79) in rows(batch.readings, "metric", "value")
    assert "pm2_5" not in batch.readings.column("metric").to_pylist()


def test_bad_values_are_quarantined_by_name(codecs: CodecSetup) -> None:
    codecs()
    got, rejects = decoded({"sensor": {"id": 7}, "timestamp": "2020-01-22 14:33:46",
                            "sensordatavalues": [{"value_type": "P1", "value": "n/a"},
                                                 {"value_type": "radon", "value": "5"},
                                                 {"value_type": "P2", "value": "4.5"}]},
                           {"sensor": {}, "timestamp": "2020-01-22 14:33:46"})
    assert got == [("sc-7", "pm2_5", 4.5)]
    reasons = [r["reason"] for r in rejects]
    assert "sensor_community: sc-7: P1: is not a number" in reasons[0]
    assert "value_type 'radon' has no metric" in reasons[1]
    assert "the record has no sensor.id and timestamp" in reasons[2]


# -- the poller -------------------------------------------------------------------------------

def test_poll_twice_stores_nothing_new(make_api: Callable[..., Api], files: Files) -> None:
    api = make_api()
    files.files["/static/v1/data.json"] = fixture("sensor_community/data.json")
    url = files.url + "/static/v1/data.json"
    first = poll_once(api.runtime.settings, RuntimeTarget(api.runtime), url=url)
    assert first.row() == {"records": 8, "new": 8, "seen": 0, "sensors_registered": 8,
                           "unusable": 0}
    stored = api.wait_stored(16)
    assert ("sc-1356", "pm10", TS_2020, 0.2) in stored
    assert ("sc-1356", "pm2_5", TS_2020, 0.2) in stored
    device = api.runtime.registry.get("default", "sc-1356")
    assert (device.type, device.lat, device.lon, device.alt) == (
        "sensor-community", 51.044, 13.746, 115.3)
    assert device.tags["sensor_type"] == "SDS011"
    api.drain()
    before = api.runtime.worker.stats.stored
    second = poll_once(api.runtime.settings, RuntimeTarget(api.runtime), url=url)
    assert second.row() == {"records": 8, "new": 0, "seen": 8, "sensors_registered": 0,
                            "unusable": 0}
    api.drain()
    assert api.runtime.worker.stats.stored == before and len(api.stored()) == len(stored)
    assert files.requests == 2


def test_the_scheduled_job_polls(make_api: Callable[..., Api], files: Files,
                                 tmp_path: Path) -> None:
    """The `sensor-community` job (off until scheduled) is one poll in the runtime."""
    from sensorlake.ops.jobs import effective_schedule, get_job
    from sensorlake.ops.opsdb import OpsDB
    from sensorlake.ops.scheduler import run_now
    files.files["/data.json"] = fixture("sensor_community/data.json")
    api = make_api(sensor_community={"url": files.url + "/data.json"})
    assert effective_schedule(get_job("sensor-community"), {}) is None
    assert effective_schedule(get_job("sensor-community"),
                              {"sensor-community": "every 5m"}) == "every 5m"
    db = OpsDB(tmp_path / "ops-test.db")
    run = run_now(api.runtime, db, "sensor-community")
    assert run["status"] == "succeeded", run
    assert run["result"]["new"] == 8 and run["rows_done"] == 8
    assert api.wait_stored(16)
    again = run_now(api.runtime, db, "sensor-community")
    assert again["result"]["seen"] == 8 and again["result"]["new"] == 0


def test_a_moved_sensor_keeps_its_calibration(make_api: Callable[..., Api]) -> None:
    from sensorlake.registry import Calibration
    api = make_api()
    api.runtime.registry.add(Device(id="sc-1356", lat=1.0, lon=1.0, calibration={
        "pm10": Calibration(scale=2.0)}))
    body = fixture("sensor_community/data.json")
    result = RuntimeTarget(api.runtime).deliver(body, "test")
    assert result.sensors_registered == 8
    device = api.runtime.registry.get("default", "sc-1356")
    assert (device.lat, device.lon) == (51.044, 13.746)
    assert device.calibration["pm10"].scale == 2.0


def test_delivery_route_and_server_target(make_api: Callable[..., Api]) -> None:
    api = make_api()
    target = ServerTarget("http://testserver", api.ingest, client=api.client)
    result = target.deliver(fixture("sensor_community/data.json"), "poll:test")
    assert (result.records, result.new, result.sensors_registered) == (8, 8, 8)
    assert api.wait_stored(16)
    bound, _ = api.runtime.tokens.create(Role.INGEST, "default", device_id="sc-36")
    refused = api.client.post("/api/v1/integrations/sensor-community",
                              content=fixture("sensor_community/data.json"),
                              headers=api.headers(bound))
    assert refused.status_code == 403
    not_a_file = api.client.post("/api/v1/integrations/sensor-community", content=b"{}",
                                 headers=api.headers())
    assert not_a_file.status_code == 400 and "JSON array" in not_a_file.json()["detail"]


@pytest.mark.slow
def test_the_cli_polls_on_its_own(tmp_path: Path, files: Files) -> None:
    files.files["/data.json"] = fixture("sensor_community/data.json")
    data = tmp_path / "cli-data"
    command = [SENSORLAKE, "poll", "sensor-community", "--once", "--url",
               files.url + "/data.json", "--data-dir", str(data), "--format", "json"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert orjson.loads(first.stdout)[0]["new"] == 8
    second = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert orjson.loads(second.stdout)[0] | {"seen": 8, "new": 0} == orjson.loads(
        second.stdout)[0]
    with duckdb.connect(str(data / "hot" / "readings.duckdb"), read_only=True) as hot:
        (count,) = hot.execute("SELECT count(*) FROM readings WHERE metric IN "
                               "('pm10', 'pm2_5')").fetchone()
    assert count == 10  # five SDS011 records, P1 and P2 each
    failed = subprocess.run([*command[:5], files.url + "/missing.json", *command[6:]],
                            capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1 and "cannot fetch" in failed.stderr


# -- airrohr ----------------------------------------------------------------------------------

def test_airrohr_codec_strips_prefixes(codecs: CodecSetup) -> None:
    codecs({"balcony": ("airrohr", {})},
           device_types={"airrohr": {"fields": {"BME280_temperature": "temperature"}}})
    batch = get_codec("airrohr").decode(entries([fixture("airrohr/push.json")], "airrohr",
                                                "balcony"))
    assert rows(batch.readings, "metric", "value") == [
        ("pm10", 5.45), ("pm2_5", 2.75), ("temperature", 21.62),
        ("pressure", pytest.approx(1006.2112)), ("humidity", 46.45), ("rssi", -71.0)]
    assert batch.rejects.num_rows == 0


def test_airrohr_push_end_to_end(make_api: Callable[..., Api]) -> None:
    api = make_api()
    api.runtime.registry.add(Device(id="balcony", type="airrohr", lat=48.7, lon=9.1,
                                    tags={"chip_id": "15355643"}))
    basic = base64.b64encode(f"sensorlake:{api.ingest}".encode()).decode()
    response = api.client.post("/api/v1/integrations/airrohr",
                               content=fixture("airrohr/push.json"),
                               headers={"Authorization": f"Basic {basic}",
                                        "X-Sensor": "esp8266-15355643", "X-Pin": "1",
                                        "Content-Type": "application/json"})
    assert response.status_code == 200 and response.json()["accepted"] == 1
    stored = api.wait_stored(6)
    assert {(d, m) for d, m, _, _ in stored} >= {("balcony", "pm10"), ("balcony", "pm2_5"),
                                                 ("balcony", "pressure")}
    stranger = api.client.post("/api/v1/integrations/airrohr",
                               content=fixture("airrohr/push.json"),
                               headers={**api.headers(), "X-Sensor": "esp8266-999"})
    assert stranger.status_code == 200
    anonymous = api.client.post("/api/v1/integrations/airrohr", content=b'{"x": 1}',
                                headers=api.headers())
    assert anonymous.status_code == 400
    quarantined = poll(api.quarantined, lambda got: {"esp8266-999", ""} <= {
        q["device_id"] for q in got})
    reasons = {q["device_id"]: q["reason"] for q in quarantined}
    assert "'esp8266-999' is not registered" in reasons["esp8266-999"]
    assert "no device: send the X-Sensor header" in reasons[""]
    bound, _ = api.runtime.tokens.create(Role.INGEST, "default", device_id="other")
    refused = api.client.post("/api/v1/integrations/airrohr",
                              content=fixture("airrohr/push.json"),
                              headers={**api.headers(bound), "X-Sensor": "esp8266-15355643"})
    assert refused.status_code == 403
    assert api.client.post("/api/v1/integrations/airrohr",
                           content=fixture("airrohr/push.json")).status_code == 401
