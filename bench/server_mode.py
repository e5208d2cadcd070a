"""Server-profile throughput: readings/s into PostgreSQL with 1 and 2 workers, next to
PostgreSQL's own idempotent COPY rate measured in the same run.

    .venv/bin/python bench/server_mode.py [--messages 2000] [--per-message 100]

Needs NATS with JetStream on 127.0.0.1:4222 and PostgreSQL on 127.0.0.1:5432 (database
`test`); uses its own stream and schema and removes them afterwards.

1. PostgreSQL alone: `PostgresStore.write` of the same readings the workers will store
   (COPY into the staging table, then INSERT ... ON CONFLICT DO NOTHING and the `latest`
   upsert), first into an empty schema, then again (every row a conflict: the no-op rate).
2. End to end: the messages (batch envelopes of --per-message readings) are published to
   the stream first; then N `sensorlake run worker` processes start and the clock runs from
   the first committed batch to the last (process start-up is not counted).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import psycopg
import pyarrow as pa
from pydantic import SecretStr

from _common import append_results
from sensorlake.auth.tokens import TokenStore
from sensorlake.catalog import Catalog
from sensorlake.config import JetStreamSettings, PostgresSettings
from sensorlake.log.base import Envelope
from sensorlake.log.jetstream import JetStreamLog
from sensorlake.model import READING_SCHEMA
from sensorlake.registry import Device, DeviceRegistry
from sensorlake.store.postgres import PostgresStore

DSN = "postgresql://postgres@127.0.0.1:5432/test"
NATS = "nats://127.0.0.1:4222"
METRICS = ("temperature", "humidity", "pressure", "co2")
DEVICES = 50
SENSORLAKE = str(Path(sys.executable).parent / "sensorlake")


def messages(count: int, per_message: int, base: datetime) -> list[tuple[str, bytes]]:
    per_ts = per_message // len(METRICS)
    out = []
    for m in range(count):
        device = f"b-{m % DEVICES:03d}"
        seq = m // DEVICES
        batch = [{"ts": int((base + timedelta(seconds=seq * per_ts + k)).timestamp() * 1000),
                  "readings": {"temperature": 20.5, "humidity": 55.0, "pressure": 1001.0,
                               "co2": 420.0}} for k in range(per_ts)]
        out.append((device, orjson.dumps({"device": device, "batch": batch})))
    return out


def as_table(msgs: list[tuple[str, bytes]]) -> pa.Table:
    """The readings the workers will store, for the PostgreSQL-only measurement."""
    cols: dict[str, list] = {n: [] for n in READING_SCHEMA.names}
    for device, body in msgs:
        for item in orjson.loads(body)["batch"]:
            ts = datetime.fromtimestamp(item["ts"] / 1000, UTC)
            for metric, value in item["readings"].items():
                for name, v in (("tenant", "default"), ("device_id", device),
                                ("metric", metric), ("ts", ts), ("value", value),
                                ("quality", 0), ("received_at", ts), ("lat", None),
                                ("lon", None)):
                    cols[name].append(v)
    return pa.table(cols, schema=READING_SCHEMA)


def pg_rates(settings: PostgresSettings, table: pa.Table) -> tuple[float, float]:
    store = PostgresStore(settings)
    try:
        start = time.perf_counter()
        for chunk in table.to_batches(max_chunksize=50_000):
            store.write(pa.Table.from_batches([chunk]))
        fresh = table.num_rows / (time.perf_counter() - start)
        start = time.perf_counter()
        for chunk in table.to_batches(max_chunksize=50_000):
            assert store.write(pa.Table.from_batches([chunk])) == 0
        again = table.num_rows / (time.perf_counter() - start)
    finally:
        store.close()
    return fresh, again


def end_to_end(workers: int, msgs: list[tuple[str, bytes]], readings: int,
               folder: Path) -> float:
    tag = f"bench_{os.getpid()}_{workers}"
    schema, stream = tag.lower(), tag.upper()
    data = folder / f"data-{workers}"
    catalog = Catalog(data / "catalog.db")
    DeviceRegistry(catalog).upsert([Device(id=f"b-{i:03d}") for i in range(DEVICES)])
    TokenStore(catalog)
    catalog.close()
    config = folder / f"{tag}.toml"
    config.write_text(
        f'profile = "server"\ndata_dir = "{data}"\n[jetstream]\nstream = "{stream}"\n'
        f'subject_prefix = "bench.{stream}"\n[postgres]\ndsn = "{DSN}"\n'
        f'schema_name = "{schema}"\n[worker]\nbatch_messages = 500\n'
        "lake_flush_seconds = 3600\n")
    js = JetStreamSettings(servers=[NATS], stream=stream, subject_prefix=f"bench.{stream}")
    log = JetStreamLog(js)
    now = time.time_ns() // 1000
    for i in range(0, len(msgs), 1000):
        log.append([Envelope(f"{tag}-{j}", "default", d, "bench", "envelope", body, now)
                    for j, (d, body) in enumerate(msgs[i:i + 1000], start=i)])
    procs = [subprocess.Popen([SENSORLAKE, "run", "worker", "--config", str(config)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(workers)]
    try:
        first = done = None
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(DSN, autocommit=True) as conn:
                    count = conn.execute(f"SELECT count(*) FROM {schema}.processed").fetchone()[0]
            except psycopg.Error:
                count = 0
            if count and first is None:
                first = time.monotonic()
            if count >= len(msgs):
                done = time.monotonic()
                break
            time.sleep(0.05)
        assert first is not None and done is not None, "workers did not finish"
        with psycopg.connect(DSN, autocommit=True) as conn:
            stored = conn.execute(f"SELECT count(*) FROM {schema}.readings").fetchone()[0]
        assert stored == readings, (stored, readings)
        return readings / max(done - first, 1e-3)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=60)
        log.close()
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        asyncio.run(_drop_stream(stream))


async def _drop_stream(stream: str) -> None:
    import nats
    nc = await nats.connect(NATS)
    js = nc.jetstream()
    for delete, name in ((js.delete_stream, stream), (js.delete_key_value, f"{stream}_consumers"),
                         (js.delete_key_value, f"{stream}_marks"),
                         (js.delete_key_value, f"{stream}_processes")):
        with contextlib.suppress(Exception):
            await delete(name)
    await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--per-message", type=int, default=100)
    args = parser.parse_args()
    base = (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0)
    msgs = messages(args.messages, args.per_message, base)
    table = as_table(msgs)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        schema = f"bench_pg_{os.getpid()}"
        settings = PostgresSettings(dsn=SecretStr(DSN), schema_name=schema)
        try:
            fresh, again = pg_rates(settings, table)
        finally:
            with psycopg.connect(DSN, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        one = end_to_end(1, msgs, table.num_rows, Path(tmp))
        two = end_to_end(2, msgs, table.num_rows, Path(tmp))
    command = (f"python bench/server_mode.py --messages {args.messages} "
               f"--per-message {args.per_message}")
    append_results("Server mode: JetStream -> workers -> PostgreSQL", command, [
        ("readings", f"{table.num_rows:,} in {args.messages:,} batch messages"),
        ("PostgreSQL idempotent COPY, new rows", f"{fresh:,.0f} readings/s"),
        ("PostgreSQL idempotent COPY, all conflicts", f"{again:,.0f} readings/s"),
        ("end to end, 1 worker", f"{one:,.0f} readings/s"),
        ("end to end, 2 workers", f"{two:,.0f} readings/s"),
        ("load average at start", f"{load:.1f}"),
    ])


if __name__ == "__main__":
    main()
