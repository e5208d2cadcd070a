"""Zero loss, no duplicates, across kill -9.

A client posts 20,000 readings to `sensorlake up` and retries every request until it gets a
200, while the server is killed with SIGKILL three times and restarted on the same folder.
After a graceful stop, the hot store and the Parquet lake must each hold exactly the readings
that were sent: every acknowledged reading present, none twice. The raw lake must hold every
acknowledged envelope, and nothing may be quarantined.

The first kill lands anywhere. The others are aimed at a lake flush in progress, where
recovery must cut exactly the same span again: the second as soon as the log shows a claimed
span (lake files being written), the third once that span's readings file is published but
the span is not yet acknowledged.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import httpx
import orjson
import pytest
from e2e_support import Server

from sensorlake.auth.tokens import Role, TokenStore
from sensorlake.catalog import Catalog
from sensorlake.registry import Device, DeviceRegistry

DEVICES = [f"dev-{i:02d}" for i in range(10)]
MESSAGES = 400  # per device, seq 1..400
METRICS = ("pm2_5", "pm10", "temperature", "humidity", "pressure")
KILLS = 3
CLIENT_THREADS = 4
RATE = 400  # messages/s at most, all threads together: the stream lasts ~10 s of uptime,
#             so every kill lands while the client is sending
DEADLINE = 100.0  # seconds for the client to get everything acknowledged

Key = tuple[str, str, int]  # (device, metric, ts in µs)


def readings_of(device_index: int, seq: int) -> dict[str, float]:
    """In-range values, already at the catalog's precision (so they are stored as sent)."""
    return {"pm2_5": round(3 + (seq % 40) * 0.7 + device_index, 1),
            "pm10": round(6 + (seq % 30) * 1.1, 1),
            "temperature": round(-5 + (seq % 60) * 0.37, 2),
            "humidity": round(30 + (seq % 50) * 0.9, 1),
            "pressure": round(990 + (seq % 40) * 0.5, 1)}


@dataclass
class Request:
    body: bytes
    ndjson: bool
    messages: list[tuple[str, int]]  # (device, seq) of every envelope in the body


def build_requests(base: datetime) -> tuple[list[Request], dict[Key, float]]:
    """Every device's 400 messages: groups of 10 seqs alternate between one NDJSON request
    and ten single-envelope requests. Returns the requests (interleaved across devices) and
    the expected readings {(device, metric, ts_us): value}."""
    expected: dict[Key, float] = {}
    per_device: list[list[Request]] = []
    for index, device in enumerate(DEVICES):
        requests: list[Request] = []
        for group in range(MESSAGES // 10):
            docs = []
            for seq in range(group * 10 + 1, group * 10 + 11):
                ts = base + timedelta(seconds=seq)
                values = readings_of(index, seq)
                ts_us = int(ts.timestamp()) * 1_000_000
                expected.update({(device, m, ts_us): v for m, v in values.items()})
                docs.append((seq, {"device": device, "seq": seq,
                                   "ts": ts.isoformat().replace("+00:00", "Z"),
                                   "readings": values}))
            if group % 2 == 0:
                body = b"\n".join(orjson.dumps(doc) for _, doc in docs) + b"\n"
                requests.append(Request(body, True, [(device, seq) for seq, _ in docs]))
            else:
                requests += [Request(orjson.dumps(doc), False, [(device, seq)])
                             for seq, doc in docs]
        per_device.append(requests)
    interleaved = [r for batch in zip(*per_device, strict=True) for r in batch]
    return interleaved, expected


@dataclass
class Client:
    """Posts requests, retrying each (same bytes) until 200; records what was acknowledged."""

    url: str
    token: str
    deadline: float
    acked: set[tuple[str, int]] = field(default_factory=set)
    retries: int = 0
    refused: int = 0  # 503 answers
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, requests: list[Request], rate: float) -> None:
        """Send `requests` in order, at most `rate` messages per second."""
        headers = {"Authorization": f"Bearer {self.token}"}
        next_at = time.monotonic()
        with httpx.Client(base_url=self.url, headers=headers, timeout=15) as http:
            for request in requests:
                time.sleep(max(0.0, next_at - time.monotonic()))
                self._send(http, request)
                next_at = max(next_at, time.monotonic() - 1.0) + len(request.messages) / rate

    def _send(self, http: httpx.Client, request: Request) -> None:
        content_type = "application/x-ndjson" if request.ndjson else "application/json"
        while True:
            if time.monotonic() > self.deadline:
                raise AssertionError(f"request for {request.messages[0]} never acknowledged")
            try:
                response = http.post("/api/v1/ingest", content=request.body,
                                     headers={"Content-Type": content_type})
            except httpx.TransportError:  # server killed or restarting
                self._retry(0.05)
                continue
            if response.status_code == 503:
                with self.lock:
                    self.refused += 1
                self._retry(0.2)
                continue
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["accepted"] == len(request.messages), body  # new or duplicate
            assert "quarantined" not in body, body
            with self.lock:
                self.acked.update(request.messages)
            return

    def _retry(self, pause: float) -> None:
        with self.lock:
            self.retries += 1
        time.sleep(pause)

    @property
    def progress(self) -> int:
        with self.lock:
            return len(self.acked)


def prepare(data: Path) -> tuple[str, str]:
    """10 registered devices, an ingest and an owner token for tenant "default"."""
    catalog = Catalog(data / "catalog.db")
    try:
        DeviceRegistry(catalog).upsert([Device(id=d, lat=52.0, lon=5.0) for d in DEVICES])
        tokens = TokenStore(catalog)
        ingest, _ = tokens.create(Role.INGEST, "default", label="kill9 client")
        owner, _ = tokens.create(Role.OWNER, "default", label="kill9 checks")
    finally:
        catalog.close()
    return ingest, owner


def claimed(log_db: Path) -> tuple[int, int] | None:
    """The span the worker claimed and has not acknowledged yet (read-only peek at the log)."""
    try:
        with closing(sqlite3.connect(f"file:{log_db}?mode=ro", uri=True, timeout=1)) as db:
            row = db.execute("select claim_first, claim_last from consumers "
                             "where name = 'worker'").fetchone()
    except sqlite3.Error:  # not created yet, or busy: no claim seen
        return None
    return (row[0], row[1]) if row is not None and row[0] is not None else None


def published(lake: Path, span: tuple[int, int]) -> bool:
    """Whether the readings file of `span` is in the lake."""
    name = f"part-{span[0]:012d}-{span[1]:012d}.parquet"
    return any(lake.glob(f"readings/date=*/hour=*/{name}"))


def aim(log_db: Path, lake: Path | None, timeout: float) -> bool:
    """Wait (up to `timeout`) for a claimed span, and with `lake` also for its readings file
    to be published; True when that moment came."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        span = claimed(log_db)
        if span is not None and (lake is None or published(lake, span)):
            return True
        time.sleep(0.001)
    return False


def wait_drained(server: Server, owner: str, timeout: float = 60) -> dict:
    """Poll /api/v1/status until the worker processed and acknowledged the whole log."""
    deadline = time.monotonic() + timeout
    status: dict = {}
    while time.monotonic() < deadline:
        response = httpx.get(f"{server.url}/api/v1/status", timeout=10,
                             headers={"Authorization": f"Bearer {owner}"})
        status = response.json()
        log = status["log"]
        if log["backlog"] == 0 and status["worker"]["processed_offset"] == log["last_offset"]:
            return status
        time.sleep(0.2)
    raise AssertionError(f"log not drained after {timeout}s: {status}\n{server.output()}")


def stored_readings(connect: Callable[[], duckdb.DuckDBPyConnection], relation: str,
                    ) -> tuple[int, int, dict[Key, float]]:
    """(rows, distinct keys, {(device, metric, ts_us): value}) of the sent metrics."""
    metrics = ", ".join(f"'{m}'" for m in METRICS)
    where = f"tenant = 'default' AND metric IN ({metrics})"
    with connect() as db:
        rows, distinct = db.execute(
            f"select count(*), count(distinct (device_id, metric, ts)) from {relation} "
            f"where {where}").fetchone()
        values = {(d, m, ts): v for d, m, ts, v in db.execute(
            f"select device_id, metric, epoch_us(ts), value from {relation} "
            f"where {where}").fetchall()}
    return rows, distinct, values


@pytest.mark.slow
def test_kill9_loses_and_duplicates_nothing(tmp_path: Path,
                                            make_server: Callable[..., Server]) -> None:
    """20,000 readings, 3 × SIGKILL mid-stream: hot store and lake hold exactly them."""
    started = time.monotonic()
    data = tmp_path / "data"
    ingest_token, owner_token = prepare(data)
    now = datetime.now(UTC)
    base = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1, minutes=3)
    requests, expected = build_requests(base)  # ts cross an hour: two lake partitions
    assert len(expected) == len(DEVICES) * MESSAGES * len(METRICS) == 20_000

    # lake flushes (claim, write, ack) every 0.5 s, so kills land between and inside them
    server = make_server(data, SENSORLAKE_WORKER__LAKE_FLUSH_SECONDS="0.5")
    server.start()
    client = Client(server.url, ingest_token, time.monotonic() + DEADLINE)
    total = len(DEVICES) * MESSAGES
    kills: list[tuple[float, int]] = []  # (seconds since start, messages acked by then)
    in_claim = 0  # kills that hit between a span's claim and its acknowledgement
    log_db, lake = data / "log" / "log.db", data / "lake"
    rng = random.Random()

    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        shares = [requests[i::CLIENT_THREADS] for i in range(CLIENT_THREADS)]
        futures = [pool.submit(client.run, share, RATE / CLIENT_THREADS) for share in shares]
        for kill in range(1, KILLS + 1):
            up_since = time.monotonic()
            uptime = rng.uniform(1.0, 2.0)
            # at least 1-2 s of uptime, and spread over the stream: kill k after k/4 of it
            while not all(f.done() for f in futures) and (
                    time.monotonic() - up_since < uptime
                    or client.progress < total * kill // (KILLS + 1)):
                time.sleep(0.05)
            if kill > 1:
                aim(log_db, lake if kill == 3 else None, timeout=2.0)
            server.kill9()
            kills.append((round(time.monotonic() - started, 1), client.progress))
            in_claim += claimed(log_db) is not None  # still claimed: killed mid-flush
            server.start()
        for future in futures:
            future.result()

    assert len(client.acked) == total  # every message was eventually acknowledged
    status = wait_drained(server, owner_token)
    assert server.stop() == 0, server.output()

    hot_path = str(data / "hot" / "readings.duckdb")
    lake_glob = f"read_parquet('{data}/lake/readings/**/*.parquet', hive_partitioning=true)"
    for name, connect, relation in [
        ("hot store", lambda: duckdb.connect(hot_path, read_only=True), "readings"),
        ("lake", duckdb.connect, lake_glob),
    ]:
        rows, distinct, values = stored_readings(connect, relation)
        assert rows == distinct == len(expected), f"{name}: {rows} rows, {distinct} distinct"
        missing = expected.keys() - values.keys()
        extra = values.keys() - expected.keys()
        assert not missing and not extra, f"{name}: missing {sorted(missing)[:5]} " \
                                          f"extra {sorted(extra)[:5]}"
        wrong = [k for k, v in expected.items() if abs(values[k] - v) > 1e-9]
        assert not wrong, f"{name}: wrong values at {wrong[:5]}"

    raw = duckdb.connect().execute(
        f"select distinct device_id, seq from read_parquet('{data}/lake/raw/**/*.parquet', "
        "hive_partitioning=true)").fetchall()
    assert client.acked <= set(raw)
    with closing(sqlite3.connect(data / "quarantine.db")) as db:
        assert db.execute("select count(*) from quarantine").fetchone()[0] == 0

    print(f"\nkill -9 test: {len(kills)} kills at (s, msgs acked) {kills}, {in_claim} of them "
          f"mid-flush, {server.starts} starts, {client.retries} retries ({client.refused} × "
          f"503), log offsets {status['log']['last_offset']}, "
          f"{time.monotonic() - started:.1f} s")
