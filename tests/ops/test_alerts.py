"""Alerts against a recorded series: fire once, resolve once, notify each transition once
(webhook on a local HTTP server, MQTT on the shared Mosquitto, log)."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import orjson
import pyarrow as pa
import pytest
from paho.mqtt import client as mqtt

from sensorlake.config import Settings, load_settings
from sensorlake.model import READING_SCHEMA
from sensorlake.ops.alerts import evaluate_all
from sensorlake.ops.opsdb import OpsDB
from sensorlake.store.memory import MemoryStore
from services import require_service, unique_name

T0 = datetime(2026, 11, 23, 12, tzinfo=UTC)
PM25_RULE = {"name": "pm25-high", "kind": "threshold", "metric": "pm2_5", "above": 35.4,
             "window": "10m"}


def series(values: list[float], device: str = "aq-1", metric: str = "pm2_5") -> pa.Table:
    """One reading a minute from T0."""
    ts = [T0 + timedelta(minutes=i) for i in range(len(values))]
    n = len(values)
    return pa.Table.from_pydict({
        "tenant": ["default"] * n, "device_id": [device] * n, "metric": [metric] * n,
        "ts": ts, "value": values, "quality": [0] * n, "received_at": ts,
        "lat": [None] * n, "lon": [None] * n}, schema=READING_SCHEMA)


def settings_with(tmp_path: Path, *rules: dict, **alerts: object) -> Settings:
    return load_settings(data_dir=tmp_path / "data", alerts={"rules": list(rules), **alerts})


def replay_minutes(store: MemoryStore, table: pa.Table, settings: Settings, db: OpsDB,
                   minutes: int) -> list[tuple[int, dict]]:
    """Feed the series minute by minute and evaluate after each (as the job would)."""
    out = []
    for m in range(minutes):
        store.write(table.slice(m, 1))
        out.append((m, evaluate_all(settings, store, db, now=T0 + timedelta(minutes=m))))
    return out


def events(db: OpsDB) -> list[tuple]:
    return db.execute("SELECT rule, subject, state, at FROM alert_events ORDER BY id")


class Hook(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[str]:
    Hook.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


def test_threshold_fires_once_and_resolves_once(tmp_path: Path, webhook: str) -> None:
    # 20 minutes clean, 25 minutes at 50 (above 35.4), 15 minutes clean again
    values = [20.0] * 20 + [50.0] * 25 + [20.0] * 15
    settings = settings_with(tmp_path, {**PM25_RULE, "notify": ["webhook", "log"]},
                             webhooks=[webhook])
    db = OpsDB(tmp_path / "ops.db")
    results = replay_minutes(MemoryStore(), series(values), settings, db, len(values))
    fired = [m for m, r in results if r["fired"]]
    resolved = [m for m, r in results if r["resolved"]]
    assert fired == [29]  # first minute whose last 10 minutes are all above: 20..29
    assert resolved == [45]  # the first clean reading ends it
    assert [e[2] for e in events(db)] == ["firing", "resolved"]
    assert [h["state"] for h in Hook.received] == ["firing", "resolved"]  # once each
    assert Hook.received[0]["subject"] == "aq-1" and Hook.received[0]["value"] == 50.0
    assert Hook.received[0]["id"] != Hook.received[1]["id"]
    state = db.execute("SELECT state FROM alert_states")
    assert state == [("resolved",)]


def test_a_short_spike_does_not_fire_a_sustained_rule(tmp_path: Path) -> None:
    values = [20.0] * 15 + [80.0] * 4 + [20.0] * 10
    db = OpsDB(tmp_path / "ops.db")
    results = replay_minutes(MemoryStore(), series(values), settings_with(tmp_path, PM25_RULE),
                             db, len(values))
    assert not any(r["fired"] for _, r in results)
    mean_rule = {**PM25_RULE, "name": "pm25-mean", "agg": "mean"}
    db2 = OpsDB(tmp_path / "ops2.db")
    results = replay_minutes(MemoryStore(), series(values), settings_with(tmp_path, mean_rule),
                             db2, len(values))
    assert sum(r["fired"] for _, r in results) == 1


def test_failed_webhook_is_retried_and_then_sent_once(tmp_path: Path, webhook: str) -> None:
    store = MemoryStore()
    store.write(series([50.0] * 12))
    db = OpsDB(tmp_path / "ops.db")
    broken = settings_with(tmp_path, {**PM25_RULE, "notify": ["webhook"]},
                           webhooks=["http://127.0.0.1:9/nothing-listens"])
    now = T0 + timedelta(minutes=11)
    assert evaluate_all(broken, store, db, now=now)["notifications"] == 0
    fixed = settings_with(tmp_path, {**PM25_RULE, "notify": ["webhook"]}, webhooks=[webhook])
    assert evaluate_all(fixed, store, db, now=now)["notifications"] == 1
    assert evaluate_all(fixed, store, db, now=now)["notifications"] == 0
    assert len(Hook.received) == 1


def test_no_data_rate_of_change_and_system_rules(tmp_path: Path) -> None:
    store = MemoryStore()
    store.write(series([10.0, 10.5, 11.0, 16.0], metric="temperature"))
    rules = [{"name": "quiet", "kind": "no_data", "minutes": 30},
             {"name": "jump", "kind": "rate_of_change", "metric": "temperature",
              "window": "5m", "max_rise": 5},
             {"name": "lag", "kind": "pipeline_lag", "seconds": 120},
             {"name": "disk", "kind": "disk_headroom", "min_hours": 24}]
    settings = settings_with(tmp_path, *rules)
    db = OpsDB(tmp_path / "ops.db")
    system = {"oldest_unacked_age_seconds": 300.0,
              "disk": {"free_bytes": 10**9, "hours_left": 5.0}}
    result = evaluate_all(settings, store, db, now=T0 + timedelta(minutes=3), system=system)
    assert result["fired"] == 3  # jump (+6 in 5 min), lag (300 s), disk (5 h left)
    later = evaluate_all(settings, store, db, now=T0 + timedelta(minutes=40),
                         system={"oldest_unacked_age_seconds": 1.0, "disk": {"free_bytes": 1}})
    assert later["fired"] == 1 and later["resolved"] == 3  # quiet fires; the others clear
    firing = db.execute("SELECT rule, subject FROM alert_states WHERE state = 'firing'")
    assert firing == [("quiet", "aq-1")]


def test_mqtt_notification_on_the_shared_broker(tmp_path: Path) -> None:
    require_service("Mosquitto", 1883)
    prefix = unique_name("test/sensorlake-alerts")
    got: list[dict] = []
    subscribed = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_subscribe = lambda *args: subscribed.set()
    client.on_message = lambda c, u, msg: got.append({"topic": msg.topic,
                                                      **orjson.loads(msg.payload)})
    client.connect("127.0.0.1", 1883)
    client.subscribe(f"{prefix}/#", qos=1)
    client.loop_start()
    try:
        assert subscribed.wait(10)
        store = MemoryStore()
        store.write(series([50.0] * 12))
        settings = settings_with(tmp_path, {**PM25_RULE, "notify": ["mqtt"]},
                                 mqtt_topic_prefix=prefix)
        db = OpsDB(tmp_path / "ops.db")
        assert evaluate_all(settings, store, db, now=T0 + timedelta(minutes=11))[
            "notifications"] == 1
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        client.loop_stop()
        client.disconnect()
    assert len(got) == 1
    assert got[0]["topic"] == f"{prefix}/default/pm25-high" and got[0]["state"] == "firing"
