"""Shared fixtures: settings in a temp data folder, log entries built from envelopes."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import orjson
import pyarrow as pa
import pytest

from sensorlake.config import Settings, load_settings
from sensorlake.log.base import LOG_ENTRY_SCHEMA
from sensorlake.model import TS_TYPE

NOW_US = 1_795_435_200_000_000  # 2026-11-23T12:00:00Z


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No SENSORLAKE_* from the developer's shell leaks into tests; cwd is a temp folder."""
    for name in list(os.environ):
        if name.startswith("SENSORLAKE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path / "data")


EntriesFactory = Callable[..., pa.Table]


@pytest.fixture
def make_entries() -> EntriesFactory:
    """A LOG_ENTRY_SCHEMA table from envelope dicts (or raw bytes)."""

    def build(*messages: dict | bytes, tenant: str = "t1", device: str | None = None,
              received_us: int = NOW_US) -> pa.Table:
        payloads = [m if isinstance(m, bytes) else orjson.dumps(m) for m in messages]
        devices = [device or (m.get("device", "") if isinstance(m, dict) else "")
                   for m in messages]
        n = len(payloads)
        return pa.table({
            "offset": pa.array(range(1, n + 1), pa.int64()),
            "msg_id": [f"m{i}" for i in range(n)],
            "tenant": [tenant] * n,
            "device_id": devices,
            "source": ["test"] * n,
            "codec": ["envelope"] * n,
            "received_at": pa.array([received_us] * n, pa.int64()).cast(TS_TYPE),
            "seq": pa.nulls(n, pa.int64()),
            "payload": pa.array(payloads, pa.binary()),
        }, schema=LOG_ENTRY_SCHEMA)

    return build
