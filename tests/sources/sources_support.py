"""Helpers for the source tests: recorded payloads, log entries of any codec, polling, and a
real Runtime (SQLite log, worker thread, DuckDB, lake) behind a TestClient."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
from fastapi.testclient import TestClient

from sensorlake.api.app import create_app
from sensorlake.auth.tokens import Role
from sensorlake.config import Settings
from sensorlake.log.base import LOG_ENTRY_SCHEMA
from sensorlake.model import TS_TYPE
from sensorlake.runtime import Runtime

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
NOW_US = 1_795_435_200_000_000  # 2026-11-23T12:00:00Z
POLL_TIMEOUT = 30.0
CodecSetup = Callable[..., Settings]


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def entries(payloads: Sequence[bytes], codec: str, devices: Sequence[str] | str = "dev-1",
            tenant: str = "t1", received_us: int = NOW_US) -> pa.Table:
    """A LOG_ENTRY_SCHEMA table of raw payloads for one codec."""
    n = len(payloads)
    names = [devices] * n if isinstance(devices, str) else list(devices)
    return pa.table({
        "offset": pa.array(range(1, n + 1), pa.int64()),
        "msg_id": [f"m{i}" for i in range(n)], "tenant": [tenant] * n, "device_id": names,
        "source": ["test"] * n, "codec": [codec] * n,
        "received_at": pa.array([received_us] * n, pa.int64()).cast(TS_TYPE),
        "seq": pa.nulls(n, pa.int64()), "payload": pa.array(list(payloads), pa.binary()),
    }, schema=LOG_ENTRY_SCHEMA)


def rows(table: pa.Table, *columns: str) -> list[tuple]:
    data = table.select(list(columns)).to_pylist()
    return [tuple(r[c] for c in columns) for r in data]


def poll(fetch: Callable[[], Any], done: Callable[[Any], bool],
         timeout: float = POLL_TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = fetch()
        if done(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


class Api:
    """A started Runtime with a TestClient, an owner and an ingest token (tenant default)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.client = TestClient(create_app(runtime))
        self.owner, _ = runtime.tokens.create(Role.OWNER, "default")
        self.ingest, _ = runtime.tokens.create(Role.INGEST, "default")

    def headers(self, token: str | None = None, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.ingest}", **extra}

    def stored(self) -> list[tuple]:
        """(device, metric, ts µs, value) of every stored reading, sorted."""
        cursor = self.runtime.hot._conn.cursor()
        try:
            return sorted(cursor.execute(
                "SELECT device_id, metric, epoch_us(ts), value FROM readings").fetchall())
        finally:
            cursor.close()

    def wait_stored(self, count: int) -> list[tuple]:
        return poll(self.stored, lambda got: len(got) >= count)

    def quarantined(self) -> list[dict]:
        return self.runtime.quarantine.list(limit=10_000).to_pylist()

    def wait_quarantined(self, count: int) -> list[dict]:
        return poll(self.quarantined, lambda got: len(got) >= count)

    def drain(self) -> None:
        """Wait until the worker processed everything appended so far."""
        last = self.runtime.log.stats().last_offset
        poll(lambda: self.runtime.worker.cursor, lambda cursor: cursor >= last)
