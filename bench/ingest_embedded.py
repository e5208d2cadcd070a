"""HTTP ingest -> queryable, embedded mode: single envelopes and 100-reading batch envelopes.

    python bench/ingest_embedded.py [--messages 30000] [--batches 4000] [--connections 32]

Starts `sensorlake up` in a subprocess on a fresh data folder, posts from a separate load
process (aiohttp, keep-alive, N connections), and times from the first request to the moment
the worker has committed everything to the hot store (the readings are queryable). Then stops
the server gracefully (the lake flush), and measures the lake's bytes per reading.
Floors (2 cores): >= 3,000 msg/s single, >= 200,000 readings/s batched, <= 4 B/reading.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import shutil
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Server, append_results, free_port
from sensorlake.auth.tokens import Role, TokenStore
from sensorlake.catalog import Catalog
from sensorlake.registry import Device, DeviceRegistry

DEVICES = 100
METRICS = ("pm2_5", "pm10", "temperature", "humidity", "pressure")
BASE_MS = 1_795_000_000_000  # 2026-11-18


def _values(k: int) -> dict[str, float]:
    return {"pm2_5": round(5 + (k * 7 % 300) / 10, 1), "pm10": round(9 + (k * 11 % 400) / 10, 1),
            "temperature": round(10 + (k % 500) / 100, 2), "humidity": 60 + k % 30,
            "pressure": round(1000 + (k % 200) / 10, 1)}


def single_bodies(count: int) -> list[bytes]:
    """One envelope of 5 readings per request; seq per device."""
    out = []
    for i in range(count):
        device, seq = i % DEVICES, i // DEVICES + 1
        out.append(orjson.dumps({"device": f"b-{device:04d}", "seq": seq,
                                 "ts": BASE_MS + seq * 1000, "readings": _values(i)}))
    return out


def batch_bodies(count: int, offset_ms: int) -> list[bytes]:
    """20 timestamps x 5 metrics = 100 readings per envelope."""
    out = []
    for i in range(count):
        device, n = i % DEVICES, i // DEVICES
        entries = [{"ts": offset_ms + (n * 20 + k) * 1000, "readings": _values(i * 20 + k)}
                   for k in range(20)]
        out.append(orjson.dumps({"device": f"b-{device:04d}", "batch": entries}))
    return out


async def _post_all(url: str, token: str, bodies: list[bytes], connections: int) -> int:
    import aiohttp

    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    retries = 0
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal retries
        while not queue.empty():
            body = queue.get_nowait()
            while True:
                async with session.post(f"{url}/api/v1/ingest", data=body,
                                        headers=headers) as response:
                    await response.read()
                    if response.status == 200:
                        break
                    if response.status != 503:
                        raise RuntimeError(f"{response.status}: {await response.text()}")
                    retries += 1
                    await asyncio.sleep(0.05)

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(connections)))
    return retries


def _load(url: str, token: str, bodies: list[bytes], connections: int) -> None:
    asyncio.run(_post_all(url, token, bodies, connections))


def run_case(server: Server, ingest: str, owner: str, bodies: list[bytes], readings: int,
             connections: int) -> tuple[float, float]:
    """Seconds from the first request until everything is queryable, and ingest-only seconds."""
    before = server.status(owner)["worker"]["readings"]
    start = time.perf_counter()
    # the load generator runs in its own process so it does not share the server's GIL
    loader = multiprocessing.Process(target=_load, args=(server.url, ingest, bodies,
                                                         connections))
    loader.start()
    loader.join()
    if loader.exitcode != 0:
        raise RuntimeError("load generator failed")
    acked = time.perf_counter() - start
    status = server.wait_drained(owner)
    elapsed = time.perf_counter() - start
    got = status["worker"]["readings"] - before
    if got < readings:
        raise RuntimeError(f"expected {readings} readings processed, got {got}")
    return elapsed, acked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=30_000, help="single envelopes")
    parser.add_argument("--batches", type=int, default=4_000, help="100-reading envelopes")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--keep", action="store_true", help="keep the data folder")
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="slbench-")
    try:
        data = Path(tmp) / "data"
        catalog = Catalog(data / "catalog.db")
        DeviceRegistry(catalog).upsert([Device(id=f"b-{i:04d}", lat=52.0, lon=5.0)
                                        for i in range(DEVICES)])
        tokens = TokenStore(catalog)
        ingest, _ = tokens.create(Role.INGEST, "default", label="bench")
        owner, _ = tokens.create(Role.OWNER, "default", label="bench")
        catalog.close()
        singles = single_bodies(args.messages)
        batches = batch_bodies(args.batches, BASE_MS + 10_000_000)
        server = Server(data, free_port())
        try:
            single_s, single_ack = run_case(server, ingest, owner, singles,
                                            args.messages * 5, args.connections)
            batch_s, batch_ack = run_case(server, ingest, owner, batches, args.batches * 100,
                                          args.connections)
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

    sent = args.messages * 5 + args.batches * 100
    append_results("ingest_embedded: HTTP ingest -> queryable (embedded)",
                   "python bench/ingest_embedded.py " + " ".join(sys.argv[1:]), [
        ("single envelopes (5 readings each)", f"{args.messages:,} messages"),
        ("single: messages/s to queryable", f"{args.messages / single_s:,.0f}"),
        ("single: messages/s acknowledged", f"{args.messages / single_ack:,.0f}"),
        ("batch envelopes (100 readings each)", f"{args.batches:,} envelopes"),
        ("batch: readings/s to queryable", f"{args.batches * 100 / batch_s:,.0f}"),
        ("batch: readings/s acknowledged", f"{args.batches * 100 / batch_ack:,.0f}"),
        ("rows stored (hot store, incl. derived aqi_us/aqi_uk)", f"{hot_rows:,}"),
        ("lake readings/ bytes per stored row", f"{lake_bytes / max(rows, 1):.2f}"),
        ("lake readings/ bytes per sent reading", f"{lake_bytes / sent:.2f}"),
        ("lake files", f"{len(files)}"),
    ])


if __name__ == "__main__":
    main()
