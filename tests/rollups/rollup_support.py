"""Shared helpers: a DuckDB store with rollups on a fixed clock, readings tables, and the
raw aggregate computed independently in Python (zoneinfo for local days and months)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa

from sensorlake.model import READING_SCHEMA
from sensorlake.registry import Device
from sensorlake.store.duckdb import DuckDBStore
from sensorlake.store.rollups import RollupConfig, device_table

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
VALUE_COLUMNS = ("count", "min", "max", "sum", "mean", "first", "first_ts", "last", "last_ts")


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def make_store(path: Path, devices: list[Device], clock: Clock,
               final_after: timedelta = timedelta(minutes=5),
               retention_days: float = 3650) -> DuckDBStore:
    config = RollupConfig(final_after=final_after, default_tz="UTC",
                          devices=lambda: device_table(devices, {}, "UTC"))
    return DuckDBStore(path, retention_days=retention_days, clock=clock,
                       rollup_config=config)


def table(rows: Iterable[tuple[str, str, datetime, float]], tenant: str = "t") -> pa.Table:
    data = [{"tenant": tenant, "device_id": d, "metric": m, "ts": ts, "value": v, "quality": 0,
             "received_at": ts, "lat": None, "lon": None} for d, m, ts, v in rows]
    return pa.Table.from_pylist(data, schema=READING_SCHEMA)


def bucket_of(ts: datetime, grain: str, tz: str) -> tuple[datetime, datetime]:
    """(start, end) of the bucket holding `ts`, computed with zoneinfo (the reference)."""
    if grain in ("1m", "1h"):
        width = timedelta(minutes=1) if grain == "1m" else timedelta(hours=1)
        start = EPOCH + ((ts - EPOCH) // width) * width
        return start, start + width
    local = ts.astimezone(ZoneInfo(tz))
    if grain == "1d":
        day = local.date()
        nxt = day + timedelta(days=1)
    else:
        day = local.date().replace(day=1)
        nxt = (day + timedelta(days=32)).replace(day=1)
    zone = ZoneInfo(tz)
    start = datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)
    end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=zone).astimezone(UTC)
    return start, end


def reference(rows: Iterable[tuple[str, str, datetime, float]], grain: str,
              zones: dict[str, str], tenant: str = "t") -> dict[tuple, dict[str, Any]]:
    """The raw aggregate per (tenant, device, metric, bucket), first stored copy per key."""
    unique: dict[tuple, float] = {}
    for d, m, ts, v in rows:
        unique.setdefault((d, m, ts), v)
    groups: dict[tuple, list[tuple[datetime, float]]] = defaultdict(list)
    ends: dict[tuple, datetime] = {}
    for (d, m, ts), v in unique.items():
        start, end = bucket_of(ts, grain, zones.get(d, "UTC"))
        groups[(tenant, d, m, start)].append((ts, v))
        ends[(tenant, d, m, start)] = end
    out = {}
    for key, items in groups.items():
        items.sort()
        values = [v for _, v in items]
        out[key] = {"bucket_end": ends[key], "count": len(values), "min": min(values),
                    "max": max(values), "sum": sum(values), "mean": sum(values) / len(values),
                    "first": items[0][1], "first_ts": items[0][0], "last": items[-1][1],
                    "last_ts": items[-1][0]}
    return out


def stored(store: DuckDBStore, grain: str) -> dict[tuple, dict[str, Any]]:
    rows = store.rollup_rows(grain).to_pylist()
    return {(r["tenant"], r["device_id"], r["metric"], r["bucket"]): r for r in rows}


def assert_equal_to_raw(store: DuckDBStore, rows: list, zones: dict[str, str]) -> None:
    for grain in ("1m", "1h", "1d", "1mo"):
        want, got = reference(rows, grain, zones), stored(store, grain)
        assert set(got) == set(want), (grain, set(got) ^ set(want))
        for key, expected in want.items():
            row = got[key]
            for column in ("bucket_end", "count", "min", "max", "first", "first_ts", "last",
                           "last_ts"):
                assert row[column] == expected[column], (grain, key, column)
            for column in ("sum", "mean"):
                assert abs(row[column] - expected[column]) <= 1e-9 * max(
                    1.0, abs(expected[column])), (grain, key, column)
