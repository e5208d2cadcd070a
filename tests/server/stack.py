"""A server-profile deployment for chaos tests: `sensorlake run ingest` and N `sensorlake run
worker` processes on a private stream, schema and data folder, a client that posts readings
until every request got a 200, and the checks that PostgreSQL and the lake hold each reading
exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import duckdb
import httpx
import nats
import orjson
import psycopg

from sensorlake.auth.tokens import Role, TokenStore
from sensorlake.catalog import Catalog
from sensorlake.registry import Device, DeviceRegistry
from server_support import PG_DSN, drop_schema, free_port
from services import require_service, unique_name

SENSORLAKE = str(Path(sys.executable).parent / "sensorlake")
METRICS = ("temperature", "humidity", "pressure", "co2")
Key = tuple[str, str, int]


def value_of(metric: str, device: int, seq: int, k: int) -> float:
    base = {"temperature": -5, "humidity": 30, "pressure": 990, "co2": 400}[metric]
    step = 1.0 if metric == "co2" else 0.5  # co2 is stored in whole ppm
    return round(base + (seq * 7 + k * 3 + device) % 40 * step, 1)


@dataclass
class Plan:
    """Messages of `per_message` readings per metric, one ts per reading, per device."""

    devices: int = 10
    messages: int = 50
    per_message: int = 10
    base: datetime = field(default_factory=lambda: (datetime.now(UTC) - timedelta(hours=2))
                           .replace(microsecond=0))

    def names(self) -> list[str]:
        return [f"dev-{i:02d}" for i in range(self.devices)]

    def bodies(self) -> tuple[list[bytes], dict[Key, float]]:
        expected: dict[Key, float] = {}
        bodies = []
        for seq in range(1, self.messages + 1):
            for d, device in enumerate(self.names()):
                batch = []
                for k in range(self.per_message):
                    ts = self.base + timedelta(seconds=(seq - 1) * self.per_message + k)
                    ts_us = int(ts.timestamp()) * 1_000_000
                    values = {m: value_of(m, d, seq, k) for m in METRICS}
                    expected.update({(device, m, ts_us): v for m, v in values.items()})
                    batch.append({"ts": ts.isoformat().replace("+00:00", "Z"),
                                  "readings": values})
                bodies.append(orjson.dumps({"device": device, "seq": seq, "batch": batch}))
        return bodies, expected


class Proc:
    """One `sensorlake run ROLE` child, killable, restartable, output appended to a file."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.args, self.log_path, self.env = args, log_path, env
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> Proc:
        with open(self.log_path, "ab") as log:
            log.write(f"--- start #{self.starts + 1} ---\n".encode())
            self.proc = subprocess.Popen([SENSORLAKE, *self.args], stdout=log,
                                         stderr=subprocess.STDOUT, env=self.env)
        self.starts += 1
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive:
            assert self.proc is not None
            os.kill(self.proc.pid, sig)
            if sig == signal.SIGKILL:
                self.proc.wait(timeout=30)

    def stop(self, timeout: float = 60) -> int | None:
        if not self.alive:
            return self.proc.returncode if self.proc else None
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
            return None

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""


class Stack:
    """Config, catalog, processes and checks of one server-profile test."""

    def __init__(self, folder: Path, nats_urls: list[str], pg_port: int = 5432,
                 **settings: object) -> None:
        require_service("PostgreSQL", 5432)
        self.folder, self.nats_urls = folder, nats_urls
        self.schema = unique_name("chaos").lower()
        self.stream = unique_name("CHAOS").replace("-", "_")
        self.data_dir = folder / "data"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs: list[Proc] = []
        self.pg_port = pg_port
        self.extra = settings
        self.config = folder / "sensorlake.toml"
        self.write_config()

    def write_config(self) -> None:
        s = self.extra
        lines = [
            'profile = "server"', f'data_dir = "{self.data_dir}"',
            "[jetstream]", f"servers = {orjson.dumps(self.nats_urls).decode()}",
            f'stream = "{self.stream}"', f'subject_prefix = "chaos.{self.stream}"',
            f"ack_wait_seconds = {s.get('ack_wait', 5)}", f"replicas = {s.get('replicas', 1)}",
            f"max_deliver = {s.get('max_deliver', 50)}",
            f"publish_retry_seconds = {s.get('publish_retry', 60)}",
            f"publish_timeout_seconds = {s.get('publish_timeout', 5)}",
            "[postgres]",
            f'dsn = "postgresql://postgres@127.0.0.1:{self.pg_port}/test"',
            f'schema_name = "{self.schema}"', "connect_timeout_seconds = 2", "pool_size = 2",
            "[worker]", f"batch_messages = {s.get('batch_messages', 50)}",
            "poll_seconds = 0.2", f"lake_flush_seconds = {s.get('flush', 1)}",
            "[lake]", "compression = \"snappy\"",
        ]
        self.config.write_text("\n".join(lines) + "\n")

    def prepare(self, plan: Plan) -> str:
        """Register the plan's devices; return an ingest token."""
        catalog = Catalog(self.data_dir / "catalog.db")
        try:
            DeviceRegistry(catalog).upsert([Device(id=d) for d in plan.names()])
            token, _ = TokenStore(catalog).create(Role.INGEST, "default", label="chaos")
        finally:
            catalog.close()
        return token

    def spawn(self, *role: str) -> Proc:
        name = f"{role[-1]}-{len(self.procs)}"
        args = ["run", *role, "--config", str(self.config)]
        if role[-1] in ("ingest", "api"):
            args += ["--port", str(self.port)]
        proc = Proc(args, self.folder / f"{name}.log", {**os.environ, "PYTHONUNBUFFERED": "1"})
        self.procs.append(proc.start())
        return proc

    def wait_http(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise AssertionError("ingest did not come up:\n" + "\n".join(
            p.output() for p in self.procs))

    # -- the client ------------------------------------------------------------------------

    def send(self, token: str, bodies: list[bytes], rate: float, threads: int = 4,
             deadline: float = 120, stop: threading.Event | None = None) -> dict[str, int]:
        """POST every body (at most `rate` per second) until each got a 200."""
        counts = {"requests": 0, "retries": 0, "errors_503": 0}
        lock = threading.Lock()
        start = time.monotonic()
        headers = {"Authorization": f"Bearer {token}"}

        def post(index: int, body: bytes) -> None:
            time.sleep(max(0.0, start + index / rate - time.monotonic()))
            with httpx.Client(timeout=30) as client:
                while True:
                    if time.monotonic() - start > deadline:
                        raise AssertionError(f"request {index} never acknowledged")
                    try:
                        response = client.post(f"{self.url}/api/v1/ingest", content=body,
                                               headers=headers)
                        if response.status_code == 200:
                            break
                        with lock:
                            counts["errors_503" if response.status_code == 503
                                   else "retries"] += 1
                        assert response.status_code == 503, response.text
                    except httpx.HTTPError:
                        with lock:
                            counts["retries"] += 1
                    time.sleep(0.2)
            with lock:
                counts["requests"] += 1

        with ThreadPoolExecutor(threads) as pool:
            for f in [pool.submit(post, i, b) for i, b in enumerate(bodies)]:
                f.result()
        return counts

    # -- checks ----------------------------------------------------------------------------

    def pg(self) -> psycopg.Connection:
        conn = psycopg.connect(PG_DSN, autocommit=True)
        conn.execute(f'SET search_path TO "{self.schema}"')
        return conn

    def stream_last(self) -> int:
        async def work() -> int:
            nc = await nats.connect(self.nats_urls)
            try:
                return int((await nc.jetstream().stream_info(self.stream)).state.last_seq)
            finally:
                await nc.close()
        return asyncio.run(work())

    def wait_exported(self, timeout: float = 120) -> int:
        """Until the lake exporter has exported every offset of the stream."""
        last = self.stream_last()
        deadline = time.monotonic() + timeout
        exported = -1
        while time.monotonic() < deadline:
            with contextlib.suppress(psycopg.Error), self.pg() as conn:
                exported = conn.execute("SELECT exported FROM lake_export").fetchone()[0]
                if exported >= last:
                    return last
            time.sleep(0.3)
        raise AssertionError(f"exported {exported} of {last} offsets:\n" + "\n".join(
            p.output() for p in self.procs))

    def hot_rows(self) -> dict[Key, float]:
        with self.pg() as conn:
            rows = conn.execute("SELECT device_id, metric, (extract(epoch FROM ts) * 1e6)::bigint"
                                ", value FROM readings").fetchall()
        return {(d, m, int(t)): v for d, m, t, v in rows}

    def lake_rows(self) -> tuple[int, dict[Key, float], list[int]]:
        """(rows in readings/, their values by key, offsets in raw/)."""
        lake = self.data_dir / "lake"
        rows = duckdb.sql(
            f"SELECT device_id, metric, epoch_us(ts), value FROM read_parquet("
            f"'{lake}/readings/*/*/*.parquet')").fetchall()
        offsets = [r[0] for r in duckdb.sql(
            f"SELECT \"offset\" FROM read_parquet('{lake}/raw/*/*/*.parquet')").fetchall()]
        return len(rows), {(d, m, int(t)): v for d, m, t, v in rows}, offsets

    def assert_exact(self, expected: dict[Key, float]) -> None:
        """PostgreSQL and the lake hold every sent reading once; raw/ every offset once."""
        last = self.wait_exported()
        hot = self.hot_rows()
        missing = set(expected) - set(hot)
        assert not missing, f"{len(missing)} readings lost in PostgreSQL, e.g. {min(missing)}"
        extra = set(hot) - set(expected)
        assert not extra, f"{len(extra)} unexpected readings, e.g. {sorted(extra)[:3]}"
        wrong = [k for k in expected if hot[k] != expected[k]]
        assert not wrong, f"{len(wrong)} values differ, e.g. {wrong[:3]}"
        count, lake, offsets = self.lake_rows()
        assert count == len(lake), f"{count - len(lake)} duplicate readings in the lake"
        assert lake == expected, f"lake has {len(lake)} readings, sent {len(expected)}"
        assert sorted(offsets) == list(range(1, last + 1)), "raw/ is not every offset once"
        with self.pg() as conn:
            assert conn.execute("SELECT count(*) FROM quarantine").fetchone()[0] == 0

    def close(self) -> None:
        for proc in self.procs:
            proc.stop(timeout=30)
        drop_schema(self.schema)

        async def cleanup() -> None:
            nc = await nats.connect(self.nats_urls, connect_timeout=2,
                                    max_reconnect_attempts=1)
            js = nc.jetstream()
            for name in (self.stream,):
                with contextlib.suppress(Exception):
                    await js.delete_stream(name)
            for bucket in ("_consumers", "_marks", "_processes"):
                with contextlib.suppress(Exception):
                    await js.delete_key_value(self.stream + bucket)
            await nc.close()
        with contextlib.suppress(Exception):
            asyncio.run(cleanup())


@contextlib.contextmanager
def stack(folder: Path, nats_urls: list[str], **kw: object) -> Iterator[Stack]:
    s = Stack(folder, nats_urls, **kw)
    try:
        yield s
    finally:
        s.close()


def log_tail(procs: list[Proc]) -> str:
    return "\n".join(p.output() for p in procs)


__all__ = ["IO", "Plan", "Proc", "Stack", "log_tail", "stack"]
