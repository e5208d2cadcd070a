"""MQTT ingest, side by side on one broker: the broker's own QoS 1 limit, a naive service,
and sensorlake (MQTT -> stored, 0 loss); plus the edge outbox's durable append rate.

    python bench/mqtt_ingest.py [--messages 100000] [--batches 4000] [--naive 5000]

1. broker limit: 10 publishers -> `mosquitto_sub -q 1 -C N`, once with `mosquitto_pub -q 1
   -l` and once with the lean publisher (bench/_mqtt_publisher.py)
2. naive: a paho subscriber that auto-acks and does one SQLite INSERT + COMMIT per message
3. sensorlake single: `sensorlake up` with [mqtt] url, one reading set (5 readings) per
   message, from the first publish until the worker has every message in the hot store;
   once with `mosquitto_pub` as the publishers, once with the lean publisher
4. sensorlake batch: 100 readings per message (20 timestamps x 5 metrics), lean publisher
5. edge outbox append: reading sets of 10 readings, 1,000 sets per durable commit

Publishers, broker and sensorlake share the 2 cores. `mosquitto_pub` costs about 20 µs of
CPU per message, a fifth of the machine at 20,000 messages/s; the lean publisher (one
connection per device, pre-encoded QoS 1 PUBLISH packets, at most 500 unacknowledged)
costs about 2.5 µs, so its rows measure the broker and sensorlake rather than the load
generator. Every figure comes from a broker started here on a free port with the config
that `sensorlake mosquitto-config` writes (auth, ACL, max_inflight_messages for the batch).
Floors (2 cores): >= 20,000 messages/s stored single, >= 200,000 readings/s with batches,
outbox append >= 50,000 readings/s.
"""

from __future__ import annotations

import argparse
import getpass
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import duckdb
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import STATUS_POLL_SECONDS, Server, append_results, free_port
from _mqtt_publisher import Publishers
from sensorlake.auth.tokens import Role, TokenStore
from sensorlake.catalog import Catalog
from sensorlake.config import load_settings
from sensorlake.edge import Outbox
from sensorlake.ingest import mqtt_client
from sensorlake.ingest.broker_auth import issue_device_token
from sensorlake.ingest.mosquitto_config import BrokerOptions, generate, ingest_password
from sensorlake.registry import Device, DeviceRegistry

PUBLISHERS = 10
METRICS = ("pm2_5", "pm10", "temperature", "humidity", "pressure")
BASE_MS = 1_795_000_000_000


def _values(k: int) -> dict[str, float]:
    return {"pm2_5": round(5 + (k * 7 % 300) / 10, 1), "pm10": round(9 + (k * 11 % 400) / 10, 1),
            "temperature": round(10 + (k % 500) / 100, 2), "humidity": 60 + k % 30,
            "pressure": round(1000 + (k % 200) / 10, 1)}


def single_lines(device: str, count: int) -> bytes:
    return b"".join(orjson.dumps({"device": device, "seq": s, "ts": BASE_MS + s * 1000,
                                  "readings": _values(s)}) + b"\n" for s in range(1, count + 1))


def batch_lines(device: str, count: int) -> bytes:
    lines = []
    for s in range(1, count + 1):
        entries = [{"ts": BASE_MS + ((s - 1) * 20 + k) * 1000, "readings": _values(s * 20 + k)}
                   for k in range(20)]
        lines.append(orjson.dumps({"device": device, "seq": s, "batch": entries}) + b"\n")
    return b"".join(lines)


class Broker:
    def __init__(self, work: Path, settings, catalog: Catalog) -> None:
        self.port = free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        user = getpass.getuser() if os.geteuid() == 0 else None
        done = generate(settings, catalog, work / "broker", "default",
                        BrokerOptions(port=self.port, user=user))
        self.proc = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c",
                                      str(done.config)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        time.sleep(0.5)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def publish(broker: Broker, files: dict[str, tuple[str, Path]]) -> list[subprocess.Popen]:
    """One `mosquitto_pub -l` per device, each as that device."""
    return [subprocess.Popen(["mosquitto_pub", "-p", str(broker.port), "-u", device, "-P", token,
                              "-t", f"sensorlake/{device}/up", "-q", "1", "-M", "500", "-l"],
                             stdin=path.open("rb"))
            for device, (token, path) in files.items()]


def publishers(broker: Broker, files: dict[str, tuple[str, Path]], lean: bool):
    """A function that starts publishing: the lean publisher (bench/_mqtt_publisher.py),
    connected and with its packets encoded before the clock starts, or `mosquitto_pub`."""
    if not lean:
        return lambda: publish(broker, files)
    ready = Publishers(broker.port, {device: (token, path.read_bytes().splitlines())
                                     for device, (token, path) in files.items()})
    return ready.start


def _wait(pubs: list[subprocess.Popen] | Publishers) -> None:
    if isinstance(pubs, Publishers):
        pubs.join()
    else:
        for pub in pubs:
            pub.wait()


def broker_limit(broker: Broker, password: str, files: dict, total: int, lean: bool) -> float:
    sub = subprocess.Popen(["mosquitto_sub", "-p", str(broker.port), "-u", "sensorlake-ingest",
                            "-P", password, "-t", "sensorlake/+/up", "-q", "1", "-C",
                            str(total)], stdout=subprocess.DEVNULL)
    start = publishers(broker, files, lean)
    time.sleep(0.5)
    started = time.perf_counter()
    pubs = start()
    sub.wait(timeout=600)
    elapsed = time.perf_counter() - started
    _wait(pubs)
    return total / elapsed


def naive(broker: Broker, password: str, files: dict, total: int, work: Path) -> tuple[float, int]:
    """paho (acks on receipt) -> one INSERT + COMMIT per message; (msgs/s, rows stored)."""
    db = sqlite3.connect(work / "naive.db", check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE m (topic TEXT, payload BLOB)")
    count = [0]
    done = threading.Event()

    def on_message(client, userdata, msg) -> None:
        db.execute("INSERT INTO m VALUES (?, ?)", (msg.topic, msg.payload))
        count[0] += 1
        if count[0] >= total:
            done.set()

    client = mqtt_client.make_client("naive-bench", "3.1.1", persistent=False)
    client.on_message = on_message
    client.on_connect = lambda c, *_: c.subscribe("sensorlake/+/up", 1)
    mqtt_client.start(client, mqtt_client.parse_broker_url(broker.url), "sensorlake-ingest",
                      password, "3.1.1", persistent=False)
    time.sleep(1.0)
    started = time.perf_counter()
    pubs = publish(broker, files)
    done.wait(timeout=600)
    elapsed = time.perf_counter() - started
    for pub in pubs:
        pub.wait()
    client.disconnect()
    client.loop_stop()
    rows = db.execute("SELECT count(*) FROM m").fetchone()[0]
    db.close()
    return rows / elapsed, rows


def sensorlake_run(server: Server, owner: str, broker: Broker, files: dict, expected_offset: int,
                   lean: bool = True) -> tuple[float, float]:
    """(seconds until every message is in the log and PUBACKed, ... in the hot store)."""
    start = publishers(broker, files, lean)
    started = time.perf_counter()
    pubs = start()
    deadline = time.monotonic() + 900
    logged = None
    while True:
        status = server.status(owner)
        if logged is None and status["log"]["last_offset"] >= expected_offset:
            logged = time.perf_counter() - started
        if status["worker"]["processed_offset"] >= expected_offset:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"not stored in time: {status}")
        time.sleep(STATUS_POLL_SECONDS)
    elapsed = time.perf_counter() - started
    _wait(pubs)
    return logged or elapsed, elapsed


def outbox_append(work: Path, sets: int = 20_000) -> float:
    readings = {f"m{i}": float(i) for i in range(10)}
    with Outbox(work / "outbox.db") as outbox:
        started = time.perf_counter()
        for chunk in range(sets // 1000):
            outbox.append_many("dev", [(BASE_MS * 1000 + (chunk * 1000 + i) * 1000, readings)
                                       for i in range(1000)])
        return sets * 10 / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--batches", type=int, default=4_000)
    parser.add_argument("--naive", type=int, default=5_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sensorlake-mqtt-bench-"))
    data = work / "data"
    settings = load_settings(data_dir=data)
    catalog = Catalog(data / "catalog.db")
    prefixes = {"limit": "l", "limit-lean": "k", "single": "s", "single-lean": "p",
                "batch": "m"}
    groups = {kind: [f"{p}-{i:02d}" for i in range(PUBLISHERS)] for kind, p in prefixes.items()}
    every = [device for devices in groups.values() for device in devices]
    DeviceRegistry(catalog).upsert([Device(id=d) for d in every])
    tokens = {d: issue_device_token(catalog, "default", d) for d in every}
    owner, _ = TokenStore(catalog).create(Role.OWNER, "default")
    password = ingest_password(settings)
    broker = Broker(work, settings, catalog)
    catalog.close()
    per = args.messages // PUBLISHERS
    per_batch = args.batches // PUBLISHERS
    files: dict[str, dict[str, tuple[str, Path]]] = {kind: {} for kind in groups}
    for kind, devices in groups.items():
        make, count = (batch_lines, per_batch) if kind == "batch" else (single_lines, per)
        for device in devices:
            path = work / f"{device}.ndjson"
            path.write_bytes(make(device, count))
            files[kind][device] = (tokens[device], path)
    naive_files = {d: (t, work / f"{d}.naive") for d, (t, p) in files["limit"].items()}
    for device, (_, path) in naive_files.items():
        path.write_bytes(single_lines(device, args.naive // PUBLISHERS))
    rows: list[tuple[str, str]] = []
    server = None
    try:
        n_single = per * PUBLISHERS
        for kind, lean, label in (("limit", False, "mosquitto_pub"),
                                  ("limit-lean", True, "lean publisher")):
            rate = broker_limit(broker, password, files[kind], n_single, lean)
            rows.append((f"broker alone: {label} QoS 1 -> mosquitto_sub QoS 1",
                         f"{rate:,.0f} msg/s ({n_single:,} messages)"))
        naive_rate, stored = naive(broker, password, naive_files, args.naive, work)
        rows.append(("naive service: paho auto-ack, one INSERT+COMMIT per message",
                     f"{naive_rate:,.0f} msg/s ({stored:,} of {args.naive:,} stored)"))
        server = Server(data, free_port(), env={"SENSORLAKE_MQTT__URL": broker.url})
        offset = 0
        for kind, lean, label in (("single", False, "mosquitto_pub"),
                                  ("single-lean", True, "lean publisher")):
            offset += n_single
            logged_s, single_s = sensorlake_run(server, owner, broker, files[kind], offset, lean)
            rows.append((f"sensorlake ingest alone, 1 reading set per message, {label} "
                         "(log, PUBACKed)", f"{n_single / logged_s:,.0f} msg/s"))
            rows.append((f"sensorlake, 1 reading set (5 readings) per message, {label}",
                         f"{n_single / single_s:,.0f} msg/s stored ({n_single * 5 / single_s:,.0f}"
                         f" readings/s; {n_single:,} messages in {single_s:.1f} s)"))
        n_batch = per_batch * PUBLISHERS
        logged_s, batch_s = sensorlake_run(server, owner, broker, files["batch"],
                                           offset + n_batch)
        rows.append(("sensorlake ingest alone, 100 readings per message (log, PUBACKed)",
                     f"{n_batch * 100 / logged_s:,.0f} readings/s"))
        rows.append(("sensorlake, 100 readings per message",
                     f"{n_batch * 100 / batch_s:,.0f} readings/s stored ({n_batch / batch_s:,.0f}"
                     f" msg/s; {n_batch:,} messages in {batch_s:.1f} s)"))
        status = server.status(owner)
        rows.append(("sensorlake MQTT counters", orjson.dumps({k: status["mqtt"][k] for k in (
            "received", "stored", "duplicates", "acked", "groups", "retries")}).decode()))
        server.stop()
        server = None
        with duckdb.connect(str(data / "hot" / "readings.duckdb"), read_only=True) as db:
            hot = db.execute("select count(*) from readings where metric in "
                             f"{tuple(METRICS)}").fetchone()[0]
        want = 2 * n_single * 5 + n_batch * 100
        rows.append(("lost (hot store rows vs sent readings)", f"{want - hot} of {want:,}"))
        rows.append(("edge outbox append, durable (1,000 sets of 10 per commit)",
                     f"{outbox_append(work):,.0f} readings/s"))
        load = os.getloadavg()
        rows.append(("machine load (1/5/15 min)", f"{load[0]:.1f} / {load[1]:.1f} / "
                                                  f"{load[2]:.1f}"))
    finally:
        if server is not None:
            server.stop()
        broker.stop()
    append_results("MQTT ingest (bench/mqtt_ingest.py)",
                   f"python bench/mqtt_ingest.py --messages {args.messages} --batches "
                   f"{args.batches} --naive {args.naive}", rows)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
