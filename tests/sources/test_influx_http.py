"""`POST /api/v2/write` over real HTTP (uvicorn on a free port) with the real
`influxdb-client` package, and Telegraf's contract: 204 only after the durable append, good
lines stored and bad lines quarantined in the same batch, 503 + Retry-After when the log is
full, InfluxDB-shaped JSON errors."""

from __future__ import annotations

import gzip
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from sources_support import Api, poll

from sensorlake.config import load_settings
from sensorlake.registry import Device
from sensorlake.runtime import Runtime


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Served(Api):
    url: str


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """A Runtime serving HTTP on a free port in a thread; stopped (and closed) at teardown."""
    started: list[tuple[Runtime, threading.Thread]] = []

    def build(start_worker: bool = True, **overrides: Any) -> Served:
        worker = {"lake_flush_seconds": 0.2, "poll_seconds": 0.05, "linger_seconds": 0}
        runtime = Runtime(load_settings(data_dir=tmp_path / f"data{len(started)}",
                                        worker=worker, **overrides))
        runtime.registry.upsert([Device(id=f"aq-{i}", lat=52.0, lon=5.0) for i in range(3)])
        if start_worker:
            runtime.start_worker()
        port = free_port()
        thread = threading.Thread(target=runtime.serve, kwargs={"host": "127.0.0.1",
                                                                "port": port}, daemon=True)
        thread.start()
        started.append((runtime, thread))
        poll(lambda: runtime._server is not None and runtime._server.started, bool)
        served = Served.__new__(Served)
        Api.__init__(served, runtime)
        served.url = f"http://127.0.0.1:{port}"
        return served

    yield build
    for runtime, thread in started:
        runtime.request_stop()
        thread.join(timeout=60)


def lines(count: int, start_s: int, device: str = "aq-1") -> list[str]:
    return [f"air,device={device},site=roof pm2_5={(i % 300) / 10},pm10={i % 400}i "
            f"{(start_s + i) * 1_000_000_000}" for i in range(count)]


def test_influxdb_client_writes_and_the_points_are_queryable(serve: Callable[..., Served]
                                                             ) -> None:
    api = serve()
    start = int(time.time()) - 3600
    points = [Point("air").tag("device", "aq-2").tag("host", "ignored")
              .field("pm2_5", 10.5 + i).field("pm10", 20 + i).field("ok", True)
              .time(start + i, WritePrecision.S) for i in range(50)]
    for gzip_on in (False, True):
        with InfluxDBClient(url=api.url, token=api.ingest, org="home",
                            enable_gzip=gzip_on) as client:
            client.write_api(write_options=SYNCHRONOUS).write(
                bucket="sensors", record=points if not gzip_on else points[:10],
                write_precision=WritePrecision.S)
    readings = poll(lambda: api.client.get(
        "/api/v1/devices/aq-2/readings", params={"metric": "pm2_5", "from": "-2h"},
        headers=api.headers(api.owner)).json()["results"], lambda rows: len(rows) >= 50)
    assert len(readings) == 50, "the gzip retry of the first 10 points stored nothing twice"
    assert [r["value"] for r in readings[:3]] == [10.5, 11.5, 12.5]
    quarantined = api.wait_quarantined(1)
    assert {q["field"] for q in quarantined} == {"ok"}, "unknown metric 'ok' is quarantined"
    assert "unknown metric 'ok'" in quarantined[0]["reason"]


def test_one_bad_line_among_a_thousand(serve: Callable[..., Served]) -> None:
    api = serve(validation={"unknown_metrics": "accept"})
    batch = lines(1000, int(time.time()) - 5000)
    batch[417] = "air,device=aq-1 pm2_5=oops 1"
    response = httpx.post(f"{api.url}/api/v2/write?org=o&bucket=b&precision=ns",
                          content=gzip.compress("\n".join(batch).encode()),
                          headers={"Authorization": f"Token {api.ingest}",
                                   "Content-Encoding": "gzip", "User-Agent": "Telegraf/1.30"})
    assert response.status_code == 204, response.text
    assert response.headers["X-Sensorlake-Lines-Accepted"] == "999"
    assert response.headers["X-Sensorlake-Lines-Rejected"] == "1"
    stored = poll(lambda: [r for r in api.stored() if r[1] == "pm2_5"],
                  lambda rows: len(rows) >= 999)
    assert len(stored) == 999
    (bad,) = api.wait_quarantined(1)
    assert bad["payload"] == b"air,device=aq-1 pm2_5=oops 1" and bad["device_id"] == "aq-1"
    assert "invalid value 'oops' for field 'pm2_5'" in bad["reason"]
    assert bad["source"].endswith("line 418")


def test_a_gateway_of_many_devices_shares_envelopes_and_registers_them(
        serve: Callable[..., Served]) -> None:
    api = serve(ingest={"auto_register": True})
    stamp = (int(time.time()) - 600) * 1_000_000_000
    batch = [f"air,device=gw-{i},site=roof pm2_5={i / 10} {stamp}" for i in range(1000)]
    batch[7] = f"air,device=gw-7,site=a\\ b pm2_5=0.7 {stamp}"  # escaped: the precise path
    batch[500] = f'air,device=gw-500 pm2_5="oops" {stamp}'
    response = httpx.post(f"{api.url}/api/v2/write", content="\n".join(batch).encode(),
                          headers={"Authorization": f"Token {api.ingest}"})
    assert response.status_code == 204, response.text
    stored = poll(lambda: [r for r in api.stored() if r[1] == "pm2_5"],
                  lambda rows: len(rows) >= 999)
    assert len(stored) == 999 and {r[0] for r in stored} == {
        f"gw-{i}" for i in range(1000) if i != 500}
    entries = api.runtime.log.read(0, max_messages=10_000).table
    assert entries.column("device_id").to_pylist() == ["*"] * 5, "5 envelopes, not 1,000"
    assert api.runtime.registry.get("default", "gw-999").id == "gw-999"
    readings = api.client.get("/api/v1/devices/gw-7/readings",
                              params={"metric": "pm2_5", "from": "-1h"},
                              headers=api.headers(api.owner)).json()["results"]
    assert [r["value"] for r in readings] == [0.7]
    (bad,) = api.wait_quarantined(1)
    assert bad["device_id"] == "gw-500" and bad["field"] == "pm2_5"
    assert "gw-500: line 101: field 'pm2_5' is a string" in bad["reason"]


def test_no_usable_line_is_400_and_still_quarantined(serve: Callable[..., Served]) -> None:
    api = serve()
    response = httpx.post(f"{api.url}/api/v2/write", content=b"garbage\nmore garbage",
                          headers={"Authorization": f"Token {api.ingest}"})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid" and "2 bad line(s)" in response.json()["message"]
    assert len(api.wait_quarantined(2)) == 2


def test_errors_in_influxdbs_shape(serve: Callable[..., Served]) -> None:
    api = serve()
    url = f"{api.url}/api/v2/write"
    anonymous = httpx.post(url, content=b"m,device=aq-1 f=1")
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "unauthorized"
    precision = httpx.post(f"{url}?precision=h", content=b"m,device=aq-1 f=1",
                           headers={"Authorization": f"Token {api.ingest}"})
    assert precision.status_code == 400 and "use ns, us, ms or s" in precision.json()["message"]
    with InfluxDBClient(url=api.url, token="slk_wrong", org="o") as client, \
            pytest.raises(Exception, match="unknown, expired or revoked token"):
        client.write_api(write_options=SYNCHRONOUS).write(bucket="b", record="m f=1")


def test_a_full_log_answers_503_with_retry_after_and_keeps_everything(
        serve: Callable[..., Served]) -> None:
    """No worker drains the log: once it is full, writes get 503 + Retry-After (what
    Telegraf retries), and what was acknowledged before is still there."""
    api = serve(start_worker=False, log={"max_bytes": 60_000},
                http={"retry_after_seconds": 3})
    start = int(time.time()) - 5000
    answers = [httpx.post(f"{api.url}/api/v2/write",
                          content="\n".join(lines(400, start + 400 * n)).encode(),
                          headers={"Authorization": f"Token {api.ingest}"})
               for n in range(4)]
    codes = [a.status_code for a in answers]
    assert codes[0] == 204 and 503 in codes, codes
    full = answers[codes.index(503)]
    assert full.headers["Retry-After"] == "3" and full.json()["code"] == "unavailable"
    kept = api.runtime.log.read(0, max_messages=100_000)
    assert sum(e.count(b"\n") + 1 for e in kept.table.column("payload").to_pylist()) == \
        400 * codes.count(204)
