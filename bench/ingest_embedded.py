"""HTTP ingest -> queryable, embedded mode: single envelopes and 100-reading batch envelopes.

    python bench/ingest_embedded.py [--messages 30000] [--batches 20000] [--connections 64]
                                    [--repeat 3]

Starts `sensorlake up` in a subprocess on a fresh data folder, posts from a separate load
process (bench/_loadgen.py: keep-alive sockets, pre-built requests), and times from the first
request to the moment the worker has committed everything to the hot store (the readings are
queryable). Then stops the server gracefully (the lake flush) and measures the lake's bytes
per reading. The batch case runs `--repeat` times (new readings each time, into the same
growing store) and reports the median, with every run listed: on a shared 2-core VM one run
varies by +-20 %. The readings come from the demo's simulator (daily cycle plus noise), so the
lake compresses them as it would real sensor data.
Floors (2 cores): >= 3,000 msg/s single, >= 200,000 readings/s batched, <= 4 B/reading.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Server, append_results, free_port
from _loadgen import build_request, run_load
from sensorlake.auth.tokens import Role, TokenStore
from sensorlake.catalog import Catalog
from sensorlake.registry import DeviceRegistry
from sensorlake.simulator import SimDevice, envelope, fleet

DEVICES = 100
BASE = datetime(2026, 11, 18, tzinfo=UTC)


def _fleet() -> list[SimDevice]:
    sims = fleet(DEVICES, seed=11)
    for index, sim in enumerate(sims):
        sim.device = sim.device.model_copy(update={"id": f"b-{index:04d}"})
    return sims


def single_bodies(count: int) -> list[bytes]:
    """One envelope per request from the demo's simulator (5-7 readings with realistic noise),
    one per device per second of simulated time; seq per device."""
    sims, rng = _fleet(), random.Random(1)
    return [orjson.dumps(envelope(sims[i % DEVICES], BASE + timedelta(seconds=i // DEVICES),
                                  rng)) for i in range(count)]


def batch_bodies(count: int, start: datetime) -> list[bytes]:
    """Batch envelopes of 100 readings: 20 seconds x the 5 stationary metrics of one device."""
    sims, rng = _fleet(), random.Random(2)
    stations = [s for s in sims if not s.mobile]
    out = []
    for i in range(count):
        sim, n = stations[i % len(stations)], i // len(stations)
        entries = []
        for k in range(20):
            doc = envelope(sim, start + timedelta(seconds=n * 20 + k), rng)
            entries.append({"ts": doc["ts"], "readings": doc["readings"]})
        out.append(orjson.dumps({"device": sim.device.id, "batch": entries}))
    return out


def _load(port: int, token: str, bodies: list[bytes], connections: int,
          result: Any) -> None:
    requests = [build_request("127.0.0.1", port, "/api/v1/ingest", token, body)
                for body in bodies]
    outcome = run_load("127.0.0.1", port, requests, connections)
    result.put((outcome.requests, outcome.retries))


def run_case(server: Server, ingest: str, owner: str, bodies: list[bytes], readings: int,
             connections: int) -> tuple[float, float, int]:
    """Seconds from the first request until everything is queryable, seconds until every
    request was acknowledged, and how many 503s were retried."""
    before = server.status(owner)["worker"]["readings"]
    results: Any = multiprocessing.Queue()
    # the load generator runs in its own process so it does not share the server's GIL;
    # it builds its requests before the clock starts
    loader = multiprocessing.Process(target=_load, args=(server.port, ingest, bodies,
                                                         connections, results))
    start = time.perf_counter()
    loader.start()
    done, retries = results.get()
    loader.join()
    if loader.exitcode != 0 or done != len(bodies):
        raise RuntimeError(f"load generator failed ({done} of {len(bodies)} acknowledged)")
    acked = time.perf_counter() - start
    status = server.wait_drained(owner)
    elapsed = time.perf_counter() - start
    got = status["worker"]["readings"] - before
    if got < readings:
        raise RuntimeError(f"expected {readings} readings processed, got {got}")
    return elapsed, acked, retries


def count_readings(bodies: list[bytes]) -> int:
    total = 0
    for body in bodies:
        doc = orjson.loads(body)
        total += sum(len(e["readings"]) for e in doc.get("batch", [doc]))
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=30_000, help="single envelopes")
    parser.add_argument("--batches", type=int, default=20_000, help="100-reading envelopes "
                        "(2M readings: long enough to include lake flushes and rollup refreshes)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3, help="batch runs (fresh readings each "
                        "time, into the same store); the median is the figure")
    parser.add_argument("--keep", action="store_true", help="keep the data folder")
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="slbench-")
    try:
        data = Path(tmp) / "data"
        catalog = Catalog(data / "catalog.db")
        DeviceRegistry(catalog).upsert([sim.device for sim in _fleet()])
        tokens = TokenStore(catalog)
        ingest, _ = tokens.create(Role.INGEST, "default", label="bench")
        owner, _ = tokens.create(Role.OWNER, "default", label="bench")
        catalog.close()
        singles = single_bodies(args.messages)
        runs = [batch_bodies(args.batches, BASE + timedelta(days=1 + k))
                for k in range(args.repeat)]
        single_readings, batch_readings = count_readings(singles), count_readings(runs[0])
        server = Server(data, free_port())
        try:
            single_s, single_ack, single_retries = run_case(
                server, ingest, owner, singles, single_readings, args.connections)
            outcomes = [run_case(server, ingest, owner, batches, batch_readings,
                                 args.connections) for batches in runs]
        finally:
            server.stop()
        files = list((data / "lake" / "readings").rglob("*.parquet"))
        lake_bytes = sum(f.stat().st_size for f in files)
        rows = duckdb.sql(f"select count(*) from read_parquet('{data}/lake/readings/**/*.parquet',"
                          " hive_partitioning=true)").fetchall()[0][0]
        hot_rows = duckdb.connect(str(data / "hot" / "readings.duckdb"), read_only=True).sql(
            "select count(*) from readings").fetchall()[0][0]
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    sent = single_readings + batch_readings * args.repeat
    outcomes.sort()
    batch_s, batch_ack, _ = outcomes[len(outcomes) // 2]
    batch_retries = sum(o[2] for o in outcomes)
    each = ", ".join(f"{batch_readings / o[0]:,.0f}" for o in outcomes)
    append_results("ingest_embedded: HTTP ingest -> queryable (embedded)",
                   "python bench/ingest_embedded.py " + " ".join(sys.argv[1:]), [
        ("single envelopes", f"{args.messages:,} messages, {single_readings:,} readings"),
        ("single: messages/s to queryable", f"{args.messages / single_s:,.0f}"),
        ("single: messages/s acknowledged", f"{args.messages / single_ack:,.0f}"),
        ("batch envelopes (100 readings each)", f"{args.batches:,} envelopes x "
         f"{args.repeat} runs"),
        ("batch: readings/s to queryable (median; floor 200,000)",
         f"{batch_readings / batch_s:,.0f} (runs: {each})"),
        ("batch: readings/s acknowledged", f"{batch_readings / batch_ack:,.0f}"),
        ("503 answers retried (single, batch)", f"{single_retries}, {batch_retries}"),
        ("rows stored (hot store, incl. derived aqi_us/aqi_uk)", f"{hot_rows:,}"),
        ("lake readings/ bytes per stored row", f"{lake_bytes / max(rows, 1):.2f}"),
        ("lake readings/ bytes per sent reading", f"{lake_bytes / sent:.2f}"),
        ("lake files", f"{len(files)}"),
    ])


if __name__ == "__main__":
    main()
