"""The commands a new user runs, end to end against a broker of the test's own:
simulated devices get their tokens, `mosquitto-config` writes the broker files,
`up` ingests over MQTT, `simulate` sends (duplicates, malformed messages, an outage)
directly and through edge agents and reports nothing lost, `edge` uploads CSV from stdin
through its outbox, `edge status` and `run ingest` work."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from e2e_support import SENSORLAKE, cli_env, run_cli
from mqtt_support import Broker

from sensorlake.auth.tokens import Role, TokenStore
from sensorlake.catalog import Catalog
from sensorlake.cli.simulate import _credentials
from sensorlake.config import load_settings
from sensorlake.ingest.broker_auth import issue_device_token
from sensorlake.registry import Device, DeviceRegistry


@pytest.mark.slow
def test_simulate_mosquitto_config_up_edge(tmp_path: Path, make_broker: Callable[..., Broker],
                                           make_server: Callable) -> None:
    data = tmp_path / "data"
    broker = make_broker(load_settings(data_dir=data))
    mqtt = f"mqtt://127.0.0.1:{broker.port}"
    names = [f"energy-meter-{i:04d}" for i in range(1, 4)]
    # what `simulate --data-dir` does on its first run: devices and device tokens
    creds = _credentials(data, None, None, "energy_meter", names, None)
    assert sorted(creds) == names and len(set(creds.values())) == 3
    _credentials(data, None, None, "weather", ["via-0001", "via-0002"], None)
    catalog = Catalog(data / "catalog.db")
    DeviceRegistry(catalog).upsert([Device(id="csv-meter")])
    csv_token = issue_device_token(catalog, "default", "csv-meter")
    owner, _ = TokenStore(catalog).create(Role.OWNER, "default")
    catalog.close()
    extra = ["--broker-user", "root"] if __import__("os").geteuid() == 0 else []
    done = run_cli("mosquitto-config", "--data-dir", data, "--out", broker.out, "--port",
                   str(broker.port), *extra)
    assert done.returncode == 0, done.stderr
    assert "6 devices" in done.stdout, done.stdout
    broker.start()
    server = make_server(data, SENSORLAKE_MQTT__URL=mqtt)
    server.start()
    headers = {"Authorization": f"Bearer {owner}"}
    deadline = time.monotonic() + 30
    while not httpx.get(f"{server.url}/api/v1/status", headers=headers,
                        timeout=10).json()["mqtt"]["connected"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)

    report = tmp_path / "report.json"
    done = run_cli("simulate", "--data-dir", data, "--devices", "3", "--seconds", "4",
                   "--rate", "10", "--target", mqtt, "--type", "energy_meter",
                   "--duplicates", "0.2", "--malformed", "0.1", "--outage", "1:1",
                   "--report", report, timeout=90)
    assert done.returncode == 0, done.stderr
    totals = json.loads(report.read_text())["totals"]
    assert totals["sent"] > 0 and totals["acked"] == totals["sent"] and totals["lost"] == 0
    assert totals["not_sent"] > 0 and totals["malformed"] > 0 and totals["duplicates"] > 0

    # through edge agents: the outage is backfilled, nothing is lost
    done = run_cli("simulate", "--data-dir", data, "--devices", "2", "--seconds", "3",
                   "--rate", "5", "--target", mqtt, "--type", "weather", "--prefix", "via",
                   "--via-edge", tmp_path / "agents", "--outage", "0.5:1.5", "--report",
                   report, timeout=90)
    assert done.returncode == 0, done.stderr
    totals = json.loads(report.read_text())["totals"]
    assert totals["sent"] >= 20 and totals["acked"] == totals["sent"], totals
    assert totals["lost"] == 0 and totals["not_sent"] == 0 and totals["backlog"] == 0

    outbox = tmp_path / "outbox.db"
    lines = "ts,energy,power\n" + "".join(
        f"2026-11-23T10:{m:02d}:00Z,{100 + m * 0.1:.1f},{400 + m}\n" for m in range(30))
    done = subprocess.run([SENSORLAKE, "edge", "--device", "csv-meter", "--target",
                           server.url, "--outbox", str(outbox)], input=lines, text=True,
                          capture_output=True, timeout=60,
                          env=cli_env(SENSORLAKE_EDGE_TOKEN=csv_token))
    assert done.returncode == 0, done.stderr
    assert "appended 30 reading sets; backlog 0" in done.stderr, done.stderr
    status = run_cli("edge", "status", "--outbox", outbox, "--format", "json")
    (row,) = json.loads(status.stdout)
    assert row["backlog"] == 0 and row["confirmed"] == 30 and row["watermark"] >= 1

    readings = httpx.get(f"{server.url}/api/v1/devices/csv-meter/readings", headers=headers,
                         params={"metric": "energy", "from": "2026-11-23T00:00:00Z"},
                         timeout=10).json()["results"]
    assert len(readings) == 30

    # a simulated meter through a second, new outbox of the same device (its seqs restart)
    other = tmp_path / "outbox2.db"
    done = run_cli("edge", "--device", "csv-meter", "--target", server.url, "--outbox", other,
                   "--simulate", "energy_meter", "--rate", "20", "--seconds", "3",
                   env=cli_env(SENSORLAKE_EDGE_TOKEN=csv_token))
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(run_cli("edge", "status", "--outbox", other, "-f", "json").stdout)
    assert row["appended"] >= 20 and row["confirmed"] >= 1, row
    assert row["confirmed"] + row["backlog"] == row["appended"] and row["watermark"] > 1, row
    assert server.stop() == 0, server.output()

    done = run_cli("run", "ingest", "--data-dir", data, "--mqtt-url", mqtt, "--seconds", "1")
    assert done.returncode == 0, done.stderr + done.stdout
    assert "received" in done.stdout
