"""Zero loss, no duplicates, end to end over MQTT, across kill -9 of sensorlake and the broker.

50 edge agents (threads of this process, each with its own SQLite outbox and its own broker
credential) upload 2,000 readings each (400 reading sets of 5 metrics) through Mosquitto to
`sensorlake up`, while `sensorlake up` is killed -9 twice and the broker is killed -9 once
(losing whatever it had PUBACKed but not saved). Every agent deletes readings only at or
below the watermark sensorlake publishes, and resends what the watermark does not cover.
After a graceful stop, the hot store and the Parquet lake each hold exactly the readings
sent: none missing, none twice, every value as sent, nothing quarantined.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import duckdb
import httpx
import pytest
from mqtt_support import Broker

from sensorlake.auth.tokens import Role, TokenStore
from sensorlake.catalog import Catalog
from sensorlake.config import EdgeSettings, load_settings
from sensorlake.edge import MqttTransport, Outbox, Uploader
from sensorlake.ingest.broker_auth import issue_device_token
from sensorlake.registry import Device, DeviceRegistry

AGENTS = 50
SETS = 400  # reading sets per agent
METRICS = ("pm2_5", "pm10", "temperature", "humidity", "pressure")
ROUNDS = 40  # the feeder appends SETS / ROUNDS sets per agent per round
ROUND_SECONDS = 0.3  # ~12 s of feeding, so every kill lands mid-stream
DEADLINE = 120.0
T0_US = 1_795_435_200_000_000 - 3_600_000_000  # an hour before 2026-11-23T12:00Z

Key = tuple[str, str, int]


def values(agent: int, index: int) -> dict[str, float]:
    return {"pm2_5": round(2 + (index % 50) * 0.5 + agent % 7, 1),
            "pm10": round(4 + (index % 30) * 1.1, 1),
            "temperature": round(-3 + (index % 60) * 0.25, 2),
            "humidity": round(30 + (index % 40) * 1.5, 1),
            "pressure": round(995 + (index % 20) * 0.5, 1)}


def prepare(data: Path) -> tuple[dict[str, str], str]:
    catalog = Catalog(data / "catalog.db")
    try:
        devices = [f"edge-{i:02d}" for i in range(AGENTS)]
        DeviceRegistry(catalog).upsert([Device(id=d, lat=52.0, lon=5.0) for d in devices])
        tokens = {d: issue_device_token(catalog, "default", d) for d in devices}
        owner, _ = TokenStore(catalog).create(Role.OWNER, "default")
    finally:
        catalog.close()
    return tokens, owner


class Fleet:
    """The agents: an outbox, an MQTT transport and an uploader thread per device."""

    def __init__(self, folder: Path, broker_url: str, tokens: dict[str, str]) -> None:
        settings = EdgeSettings(resend_seconds=3, window_messages=10, message_readings=50)
        self.stop = threading.Event()
        self.agents = []
        for device, token in tokens.items():
            outbox = Outbox(folder / f"{device}.db")
            transport = MqttTransport(broker_url, device, token, client_id=f"agent-{device}")
            self.agents.append((device, outbox, transport, Uploader(outbox, device, transport,
                                                                    settings)))
        self.threads = [threading.Thread(target=u.run, args=(self.stop, 0.05), daemon=True)
                        for _, _, _, u in self.agents]
        for thread in self.threads:
            thread.start()

    def feed(self, round_: int) -> dict[Key, float]:
        expected: dict[Key, float] = {}
        per_round = SETS // ROUNDS
        for number, (device, outbox, _, _) in enumerate(self.agents):
            items = []
            for index in range(round_ * per_round, (round_ + 1) * per_round):
                ts = T0_US + index * 1_000_000
                readings = values(number, index)
                items.append((ts, readings))
                expected.update({(device, m, ts): v for m, v in readings.items()})
            outbox.append_many(device, items)
        return expected

    def backlog(self) -> int:
        return sum(s["backlog"] for _, outbox, _, _ in self.agents for s in outbox.status())

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)
        for _, outbox, transport, _ in self.agents:
            transport.close()
            outbox.close()


def stored(connect: Callable[[], duckdb.DuckDBPyConnection], relation: str
           ) -> tuple[int, int, dict[Key, float]]:
    metrics = ", ".join(f"'{m}'" for m in METRICS)
    where = f"tenant = 'default' AND metric IN ({metrics})"
    with connect() as db:
        rows, distinct = db.execute(f"select count(*), count(distinct (device_id, metric, ts)) "
                                    f"from {relation} where {where}").fetchone()
        found = {(d, m, ts): v for d, m, ts, v in db.execute(
            f"select device_id, metric, epoch_us(ts), value from {relation} "
            f"where {where}").fetchall()}
    return rows, distinct, found


@pytest.mark.slow
def test_edge_agents_over_mqtt_lose_and_duplicate_nothing_across_kill9(
        tmp_path: Path, make_broker: Callable[..., Broker], make_server: Callable) -> None:
    started = time.monotonic()
    data = tmp_path / "data"
    tokens, owner = prepare(data)
    broker = make_broker(load_settings(data_dir=data))
    broker.configure()
    broker.start()
    server = make_server(data, SENSORLAKE_MQTT__URL=broker.url,
                         SENSORLAKE_WORKER__LAKE_FLUSH_SECONDS="0.5")
    server.start()
    fleet = Fleet(tmp_path / "outboxes", broker.url, tokens)
    expected: dict[Key, float] = {}
    events: list[str] = []
    kills = {ROUNDS // 4: "server", ROUNDS // 2: "broker", 3 * ROUNDS // 4: "server"}
    try:
        for round_ in range(ROUNDS):
            expected.update(fleet.feed(round_))
            what = kills.get(round_)
            if what == "server":
                server.kill9()
                server.start()
            elif what == "broker":
                broker.kill9()
                broker.start()
            if what:
                events.append(f"{what} killed at {time.monotonic() - started:.1f}s")
            time.sleep(ROUND_SECONDS)
        assert len(expected) == AGENTS * SETS * len(METRICS) == 100_000
        deadline = time.monotonic() + DEADLINE
        while (backlog := fleet.backlog()) > 0:
            assert time.monotonic() < deadline, f"{backlog} reading sets never confirmed"
            time.sleep(0.2)
        confirmed_at = time.monotonic() - started
        resent = sum(u.stats.resent for _, _, _, u in fleet.agents)
    finally:
        fleet.close()

    headers = {"Authorization": f"Bearer {owner}"}
    deadline = time.monotonic() + 60
    while True:
        status = httpx.get(f"{server.url}/api/v1/status", headers=headers, timeout=10).json()
        if status["worker"]["processed_offset"] == status["log"]["last_offset"]:
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    assert server.stop() == 0, server.output()

    hot = str(data / "hot" / "readings.duckdb")
    lake = f"read_parquet('{data}/lake/readings/**/*.parquet', hive_partitioning=true)"
    for name, connect, relation in [
            ("hot store", lambda: duckdb.connect(hot, read_only=True), "readings"),
            ("lake", duckdb.connect, lake)]:
        rows, distinct, found = stored(connect, relation)
        missing = expected.keys() - found.keys()
        assert not missing, f"{name}: {len(missing)} missing, e.g. {sorted(missing)[:3]}"
        assert rows == distinct == len(expected), f"{name}: {rows} rows, {distinct} distinct"
        wrong = [k for k, v in expected.items() if abs(found[k] - v) > 1e-9]
        assert not wrong, f"{name}: wrong values at {wrong[:3]}"
    with closing(sqlite3.connect(data / "quarantine.db")) as db:
        assert db.execute("select count(*) from quarantine").fetchone()[0] == 0
    print(f"\nMQTT zero-loss: {', '.join(events)}; all confirmed at {confirmed_at:.1f}s, "
          f"{resent} messages resent, {server.starts} server starts; "
          f"{time.monotonic() - started:.1f}s in all")
