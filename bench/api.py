"""Read API latency on a large hot store while ingest runs: latest, the map layer, a range.

    python bench/api.py [--readings 10000000] [--devices 1000] [--days 7] [--requests 200]
                        [--ingest-per-second 200]

Builds a data folder whose DuckDB hot store holds `--readings` readings (devices x 5 metrics,
evenly spread over the last `--days` days, ending now; `--days 0` packs them one a minute,
the densest layout, where a 24 h range touches most of the table; written with one
INSERT ... SELECT so that setup takes seconds), registers the devices, starts
`sensorlake up` in a subprocess, keeps a background client posting NDJSON envelopes
(`--ingest-per-second`, each with 5 readings), and times `--requests` sequential calls of
each route from this process:

    latest   GET /api/v1/latest?metric=aqi_us
    map      GET /api/v1/map
    range    GET /api/v1/devices/<random device>/readings?metric=pm2_5&from=-24h&every=1m

Floors (2 cores): p99 <= 200 ms for latest and map, <= 100 ms for the 24 h / 1 min range.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Server, append_results, free_port
from sensorlake.auth.tokens import Role, TokenStore
from sensorlake.catalog import Catalog
from sensorlake.config import load_settings
from sensorlake.registry import Device, DeviceRegistry
from sensorlake.runtime import Runtime
from sensorlake.store.duckdb import DuckDBStore

METRICS = ("pm2_5", "pm10", "aqi_us", "temperature", "humidity")
FLOORS_MS = {"latest": 200.0, "map": 200.0, "range": 100.0}


def prefill(data: Path, readings: int, devices: int, days: float = 0) -> int:
    """`readings` rows (rounded to whole series) ending now, plus the latest table."""
    points = max(1, readings // (devices * len(METRICS)))
    step_s = max(1, int(days * 86400 / points)) if days else 60
    DuckDBStore(data / "hot" / "readings.duckdb").close()  # creates the schema
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    conn = duckdb.connect(str(data / "hot" / "readings.duckdb"))
    conn.execute("SET TimeZone = 'UTC'")
    metrics = ", ".join(f"'{m}'" for m in METRICS)
    conn.execute(f"""
        INSERT INTO readings
        SELECT 'default', printf('d-%05d', d.range), m.metric,
               TIMESTAMPTZ '{end.isoformat()}' - to_seconds(p.range::BIGINT * {step_s}),
               round(5 + 30 * (0.5 + 0.5 * sin(p.range / 90.0 + d.range)), 1), 0,
               TIMESTAMPTZ '{end.isoformat()}' - to_seconds(p.range::BIGINT * {step_s}),
               52.0 + d.range % 100 / 500.0, 5.0 + d.range // 100 / 500.0, NULL
        FROM range({devices}) d, (SELECT unnest([{metrics}]) AS metric) m, range({points}) p
        ORDER BY 4""")
    conn.execute("""
        INSERT INTO latest SELECT tenant, device_id, metric, ts, value, lat, lon FROM readings
        QUALIFY row_number() OVER (PARTITION BY tenant, device_id, metric ORDER BY ts DESC) = 1
    """)
    total = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
    conn.close()
    return int(total)


def build_rollups(data: Path) -> float:
    """Roll up the prefilled readings, as a store that grew by ingest has them (the range
    route reads `rollup_1m`); seconds taken."""
    started = time.monotonic()
    runtime = Runtime(load_settings(data_dir=data, jobs={"enabled": False}))
    try:
        runtime.hot.rebuild_rollups()
    finally:
        runtime.close()
    return time.monotonic() - started


def ingest_loop(url: str, token: str, devices: int, per_second: int, stop: threading.Event,
                sent: list[int]) -> None:
    """Post NDJSON bodies of 50 envelopes at `per_second` envelopes per second."""
    client = httpx.Client(timeout=30, headers={"Authorization": f"Bearer {token}",
                                               "Content-Type": "application/x-ndjson"})
    seq = 0
    interval = 50 / max(per_second, 1)
    while not stop.is_set():
        started = time.monotonic()
        lines = []
        for _ in range(50):
            seq += 1
            lines.append(orjson.dumps({"device": f"d-{seq % devices:05d}", "seq": seq,
                                       "readings": {"pm2_5": 12.0, "pm10": 20.0}}))
        try:
            if client.post(f"{url}/api/v1/ingest", content=b"\n".join(lines)).status_code == 200:
                sent[0] += 50
        except httpx.HTTPError:
            pass
        stop.wait(max(0.0, interval - (time.monotonic() - started)))
    client.close()


def measure(client: httpx.Client, url: str, requests: int,
            make: dict[str, object]) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in make}
    for name, path in make.items():
        for _ in range(3):  # warm up
            client.get(url + (path() if callable(path) else path))
        for _ in range(requests):
            target = url + (path() if callable(path) else path)
            started = time.perf_counter()
            response = client.get(target)
            times[name].append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                raise RuntimeError(f"{target}: {response.status_code} {response.text[:200]}")
    return times


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readings", type=int, default=10_000_000)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--days", type=float, default=7,
                        help="Spread the readings over this many days (0: one a minute).")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--ingest-per-second", type=int, default=200)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sensorlake-bench-api-"))
    data = root / "data"
    try:
        started = time.monotonic()
        total = prefill(data, args.readings, args.devices, args.days)
        catalog = Catalog(data / "catalog.db")
        DeviceRegistry(catalog).upsert([
            Device(id=f"d-{i:05d}", type="air_quality", lat=52.0 + i % 100 / 500,
                   lon=5.0 + i // 100 / 500, public=True) for i in range(args.devices)])
        tokens = TokenStore(catalog)
        reader, _ = tokens.create(Role.OWNER, "default", label="bench", rate_per_minute=10**9)
        writer, _ = tokens.create(Role.INGEST, "default", label="bench ingest")
        catalog.close()
        rollup_s = build_rollups(data)
        setup_s = time.monotonic() - started
        server = Server(data, free_port())
        stop, sent = threading.Event(), [0]
        feeder = threading.Thread(target=ingest_loop, args=(
            server.url, writer, args.devices, args.ingest_per_second, stop, sent), daemon=True)
        try:
            feeder.start()
            rng = random.Random(3)
            client = httpx.Client(timeout=60, headers={"Authorization": f"Bearer {reader}"})
            times = measure(client, server.url, args.requests, {
                "latest": "/api/v1/latest?metric=aqi_us",
                "map": "/api/v1/map",
                "range": lambda: (f"/api/v1/devices/d-{rng.randrange(args.devices):05d}"
                                  "/readings?metric=pm2_5&from=-24h&every=1m"),
            })
            client.close()
        finally:
            stop.set()
            feeder.join(timeout=30)
            server.stop()
        rows = [("readings in the hot store", f"{total:,}"), ("devices", f"{args.devices:,}"),
                ("setup (prefill + registry + rollups)", f"{setup_s:.1f} s "
                 f"(rollups {rollup_s:.1f} s)"),
                ("envelopes ingested during the run", f"{sent[0]:,}")]
        ok = True
        for name, values in times.items():
            p50, p99 = statistics.median(values), pct(values, 0.99)
            ok &= p99 <= FLOORS_MS[name]
            rows.append((f"{name} p50 / p99", f"{p50:.1f} / {p99:.1f} ms (floor p99 <= "
                                              f"{FLOORS_MS[name]:.0f} ms)"))
        command = (f"python bench/api.py --readings {args.readings} --devices {args.devices} "
                   f"--days {args.days:g} "
                   f"--requests {args.requests} --ingest-per-second {args.ingest_per_second}")
        append_results("Read API latency while ingesting", command, rows)
        if not ok:
            print("below a floor (see the table)", file=sys.stderr)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
