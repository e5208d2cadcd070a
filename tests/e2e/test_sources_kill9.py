"""Zero loss, no duplicates for the sources, across kill -9.

A Telegraf-like client posts 10,000 line-protocol points (gzip, 250 lines per request, with
timestamps; every other request one line of each of 250 devices, which the log holds as
envelopes of many devices) to `/api/v2/write`, and a ChirpStack-like client posts 200
uplinks to the HTTP integration, each retrying the same bytes until it gets a 2xx, as
Telegraf and ChirpStack do.
The server is killed with SIGKILL twice while they send and restarted on the same folder.
After a graceful stop the hot store and the Parquet lake must each hold exactly the readings
sent: every acknowledged one, none twice, nothing quarantined.
"""

from __future__ import annotations

import gzip
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import httpx
import orjson
import pytest
from e2e_support import Server

from sensorlake.auth.tokens import Role, TokenStore
from sensorlake.catalog import Catalog
from sensorlake.registry import Device, DeviceRegistry

DEVICES = [f"tg-{i}" for i in range(5)]
BATCHES, LINES = 40, 250
GATEWAY = [f"gw-{i}" for i in range(LINES)]
"""Every other batch carries one line of each of 250 devices: envelopes of many devices."""
UPLINKS = 200
DEADLINE = 150.0


@dataclass
class Poster:
    """Sends each (path, body) until a 2xx; counts retries."""

    url: str
    token: str
    deadline: float
    done: int = 0
    retries: int = 0
    errors: list[str] = field(default_factory=list)

    def run(self, requests: list[tuple[str, bytes, dict[str, str]]]) -> None:
        try:
            with httpx.Client(base_url=self.url, timeout=15) as http:
                for path, body, headers in requests:
                    self._send(http, path, body, headers)
                    self.done += 1
        except AssertionError as exc:  # reported by the test thread
            self.errors.append(str(exc))

    def _send(self, http: httpx.Client, path: str, body: bytes,
              headers: dict[str, str]) -> None:
        while True:
            if time.monotonic() > self.deadline:
                raise AssertionError(f"{path} never acknowledged")
            try:
                response = http.post(path, content=body, headers={
                    "Authorization": f"Token {self.token}", **headers})
            except httpx.TransportError:  # killed or restarting
                self.retries += 1
                time.sleep(0.05)
                continue
            if response.status_code == 503:
                self.retries += 1
                time.sleep(float(response.headers.get("Retry-After", "1")) / 4)
                continue
            assert response.status_code in (200, 204), response.text
            return


def line_requests(base_s: int) -> tuple[list[tuple[str, bytes, dict[str, str]]], int]:
    requests = []
    for batch in range(BATCHES):
        lines = []
        for k in range(LINES):
            n = batch * LINES + k
            device = DEVICES[n % len(DEVICES)] if batch % 2 == 0 else GATEWAY[k]
            lines.append(f"air,device={device},site=kill9 pm2_5={n % 500 / 10},"
                         f"temperature={(n % 300) / 10 - 5} {(base_s + n) * 1_000_000_000}")
        requests.append(("/api/v2/write?bucket=kill9&org=test",
                         gzip.compress("\n".join(lines).encode()),
                         {"Content-Encoding": "gzip"}))
    return requests, BATCHES * LINES * 2


def uplink_requests(base_s: int) -> tuple[list[tuple[str, bytes, dict[str, str]]], int]:
    requests = []
    for n in range(UPLINKS):
        event = {"deduplicationId": f"kill9-{n}", "fCnt": n, "fPort": 1,
                 "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(base_s + n)),
                 "deviceInfo": {"devEui": "70B3D57ED0000042"},
                 "object": {"temperature": n % 40, "humidity": n % 90}}
        requests.append(("/api/v1/integrations/chirpstack?event=up", orjson.dumps(event), {}))
    return requests, UPLINKS * 3  # temperature, humidity, f_cnt (no rxInfo: no rssi/snr)


@pytest.mark.slow
def test_sources_survive_kill9(tmp_path: Path, make_server: Callable[..., Server]) -> None:
    data = tmp_path / "data"
    catalog = Catalog(data / "catalog.db")
    DeviceRegistry(catalog).upsert([Device(id=d, lat=52.0, lon=5.0)
                                    for d in DEVICES + GATEWAY] + [
        Device(id="lora-42", lat=52.1, lon=5.1, tags={"dev_eui": "70b3d57ed0000042"})])
    token, _ = TokenStore(catalog).create(Role.INGEST, "default", label="kill9")
    catalog.close()
    base_s = int(time.time()) - 4 * 3600
    lines, line_readings = line_requests(base_s)
    uplinks, uplink_readings = uplink_requests(base_s)
    server = make_server(data, SENSORLAKE_WORKER__LAKE_FLUSH_SECONDS="0.5")
    server.start()
    deadline = time.monotonic() + DEADLINE
    posters = [Poster(server.url, token, deadline), Poster(server.url, token, deadline)]
    threads = [threading.Thread(target=p.run, args=(r,)) for p, r in
               zip(posters, (lines, uplinks), strict=True)]
    for thread in threads:
        thread.start()
    for kill_after in (BATCHES // 4, BATCHES // 2):
        while posters[0].done < kill_after and threads[0].is_alive():
            time.sleep(0.02)
        server.kill9()
        server.start()
    for thread in threads:
        thread.join(timeout=DEADLINE)
    assert not any(p.errors for p in posters), [p.errors for p in posters]
    assert posters[0].done == BATCHES and posters[1].done == UPLINKS
    assert posters[0].retries > 0, "the kills must interrupt the line-protocol client"
    assert server.stop() == 0, server.output()

    hot = duckdb.connect(str(data / "hot" / "readings.duckdb"), read_only=True)
    wanted = "metric IN ('pm2_5', 'temperature', 'humidity', 'f_cnt')"
    total, distinct = hot.execute(
        f"SELECT count(*), count(DISTINCT (device_id, metric, ts)) FROM readings "
        f"WHERE {wanted}").fetchone()
    hot.close()
    assert total == distinct == line_readings + uplink_readings
    lake = duckdb.sql(
        f"SELECT count(*), count(DISTINCT (device_id, metric, ts)) FROM read_parquet("
        f"'{data}/lake/readings/**/*.parquet', hive_partitioning=true) WHERE {wanted}"
    ).fetchall()[0]
    assert lake == (total, total)
    with sqlite3.connect(data / "quarantine.db") as db:
        assert db.execute("SELECT count(*) FROM quarantine").fetchone() == (0,)
