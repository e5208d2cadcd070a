"""In-memory twins of the hot store and the quarantine, for fast tests and plugin authors.

Same semantics as the DuckDB store and the SQLite quarantine (insert-if-absent, epoch-aligned
buckets, latest per (device, metric), tenant isolation) but nothing survives the process and
there is no lake fallback. Also home of the Arrow helpers every store uses on input.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import polars as pl
import pyarrow as pa

from sensorlake.model import READING_KEY, READING_SCHEMA, TS_TYPE
from sensorlake.process.dedup import first_per_key
from sensorlake.store.base import (
    HOT_SCHEMA,
    LATEST_SCHEMA,
    QUARANTINE_SCHEMA,
    SERIES_SCHEMA,
    WINDOW_SCHEMA,
    ReadingQuery,
    series_schema,
)
from sensorlake.store.query import matches_nothing, utc, width_us

QUARANTINE_LIST_SCHEMA = QUARANTINE_SCHEMA.append(pa.field("quarantined_at", TS_TYPE))
QUARANTINE_KEY = ("msg_id", "stage", "field", "reason")


def conform(readings: pa.Table) -> pa.Table:
    """HOT_SCHEMA columns, in order and type (sinks drop `msg_id` and the like); a missing
    `log_offset` is null."""
    if "log_offset" not in readings.column_names:
        readings = readings.append_column("log_offset", pa.nulls(readings.num_rows, pa.int64()))
    return readings.select(HOT_SCHEMA.names).cast(HOT_SCHEMA)


def dedupe_first(readings: pa.Table) -> pa.Table:
    """Keep the first row of every READING_KEY within one table (input order preserved)."""
    return first_per_key(readings)


def _ts_utc(expr: pl.Expr) -> pl.Expr:
    return expr.cast(pl.Datetime("us", "UTC"))


def _epoch_us(at: datetime) -> int:
    return (utc(at) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


class MemoryStore:
    """HotStore in a polars DataFrame; thread-safe by one lock."""

    def __init__(self, retention_days: float = 30) -> None:
        self.retention = timedelta(days=retention_days)
        self._lock = threading.Lock()
        self._rows = pl.from_arrow(HOT_SCHEMA.empty_table())
        self._latest = pl.from_arrow(HOT_SCHEMA.empty_table())

    def write(self, readings: pa.Table) -> int:
        batch = pl.from_arrow(dedupe_first(conform(readings)))
        assert isinstance(batch, pl.DataFrame)
        key = list(READING_KEY)
        with self._lock:
            fresh = batch.join(self._rows.select(key), on=key, how="anti", maintain_order="left")
            if fresh.height == 0:
                return 0
            self._rows = pl.concat([self._rows, fresh])
            self._latest = (
                pl.concat([self._latest, fresh])
                .sort("ts", descending=True, maintain_order=True)
                .unique(subset=["tenant", "device_id", "metric"], keep="first",
                        maintain_order=True)
            )
            return fresh.height

    def _select(self, frame: pl.DataFrame, tenant: str, metrics: tuple[str, ...] | None,
                device_ids: tuple[str, ...] | None) -> pl.DataFrame:
        cond = pl.col("tenant") == tenant
        if metrics:
            cond &= pl.col("metric").is_in(list(metrics))
        if device_ids is not None:
            cond &= pl.col("device_id").is_in(list(device_ids))
        return frame.filter(cond)

    def readings(self, query: ReadingQuery, timeout: float | None = None) -> pa.Table:
        if matches_nothing(query):
            return SERIES_SCHEMA.empty_table()
        with self._lock:
            rows = self._rows
        start, end = _epoch_us(query.start), _epoch_us(query.end)
        ts_us = pl.col("ts").dt.epoch("us")
        rows = self._select(rows, query.tenant, query.metrics, query.device_ids)
        rows = rows.filter((ts_us >= start) & (ts_us < end))
        if query.exclude_quality:
            rows = rows.filter((pl.col("quality").cast(pl.Int64) & query.exclude_quality) == 0)
        if query.require_quality:
            rows = rows.filter((pl.col("quality").cast(pl.Int64) & query.require_quality) != 0)
        if query.every is None:
            out = rows.sort(["device_id", "metric", "ts", "value"]).select(
                "device_id", "metric", "ts", "value", pl.lit(1, pl.Int64).alias("count"),
                *(["quality"] if query.with_quality else []))
        else:
            w = width_us(query.every)
            value = pl.col("value")
            aggs = {
                "mean": value.mean(), "min": value.min(), "max": value.max(),
                "sum": value.sum(), "count": pl.len().cast(pl.Float64),
                "first": value.sort_by("ts").first(), "last": value.sort_by("ts").last(),
            }
            if query.agg not in aggs:
                raise ValueError(f"unknown aggregate {query.agg!r}: use one of {', '.join(aggs)}")
            out = (
                rows.with_columns(_ts_utc((ts_us // w) * w).alias("bucket"))
                .group_by("device_id", "metric", "bucket")
                .agg(aggs[query.agg].alias("value"), pl.len().cast(pl.Int64).alias("count"))
                .rename({"bucket": "ts"})
                .sort(["device_id", "metric", "ts"])
                .select("device_id", "metric", "ts", "value", "count")
            )
        if query.after is not None:
            device, metric, at = query.after
            ts_key = pl.col("ts").dt.epoch("us")
            out = out.filter((pl.col("device_id") > device)
                             | ((pl.col("device_id") == device) & (pl.col("metric") > metric))
                             | ((pl.col("device_id") == device) & (pl.col("metric") == metric)
                                & (ts_key > _epoch_us(at))))
        return out.head(query.limit).to_arrow().cast(series_schema(query))

    def latest(self, tenant: str, metrics: tuple[str, ...] | None = None,
               device_ids: tuple[str, ...] | None = None) -> pa.Table:
        with self._lock:
            latest = self._latest
        out = self._select(latest, tenant, metrics, device_ids).sort(["device_id", "metric"])
        return out.select(LATEST_SCHEMA.names).to_arrow().cast(LATEST_SCHEMA)

    def count(self, tenant: str | None = None) -> int:
        with self._lock:
            rows = self._rows
        return rows.height if tenant is None else rows.filter(pl.col("tenant") == tenant).height

    def window_stats(self, tenant: str, start: datetime, end: datetime,
                     metrics: tuple[str, ...] | None = None,
                     device_ids: tuple[str, ...] | None = None) -> pa.Table:
        with self._lock:
            rows = self._rows
        ts_us = pl.col("ts").dt.epoch("us")
        rows = self._select(rows, tenant, metrics, device_ids).filter(
            (ts_us >= _epoch_us(start)) & (ts_us < _epoch_us(end)))
        value = pl.col("value")
        out = rows.group_by("device_id", "metric").agg(
            pl.len().cast(pl.Int64).alias("count"),
            pl.col("ts").n_unique().cast(pl.Int64).alias("stamps"),
            value.mean().alias("mean"), value.min().alias("min"), value.max().alias("max"),
            value.sort_by("ts").first().alias("first"), value.sort_by("ts").last().alias("last"),
            pl.col("ts").min().alias("first_ts"), pl.col("ts").max().alias("last_ts"),
        ).sort("device_id", "metric")
        return out.select(WINDOW_SCHEMA.names).to_arrow().cast(WINDOW_SCHEMA)

    def replace_span(self, first: int, last: int, readings: pa.Table,
                     device_ids: tuple[str, ...] | None = None,
                     tenant: str | None = None) -> int:
        batch = pl.from_arrow(dedupe_first(conform(readings)))
        assert isinstance(batch, pl.DataFrame)
        key = list(READING_KEY)
        gone = pl.col("log_offset").is_between(first, last)
        if device_ids is not None:
            gone &= pl.col("device_id").is_in(list(device_ids))
        if tenant is not None:
            gone &= pl.col("tenant") == tenant
        with self._lock:
            kept = self._rows.filter(~gone.fill_null(False))
            fresh = batch.join(kept.select(key), on=key, how="anti", maintain_order="left")
            self._rows = pl.concat([kept, fresh])
            self._latest = (self._rows.sort("ts", descending=True, maintain_order=True)
                            .unique(subset=["tenant", "device_id", "metric"], keep="first",
                                    maintain_order=True))
            return fresh.height

    def span_readings(self, first: int, last: int) -> pa.Table:
        with self._lock:
            rows = self._rows
        span = rows.filter(pl.col("log_offset").is_between(first, last))
        return span.select(READING_SCHEMA.names).to_arrow().cast(READING_SCHEMA)

    def apply_retention(self, now: datetime | None = None,
                        done_offset: int | None = None) -> int:
        horizon = _epoch_us((now or datetime.now(UTC)) - self.retention)
        old = pl.col("ts").dt.epoch("us") < horizon
        if done_offset is not None:
            old &= pl.col("log_offset").fill_null(0) <= done_offset
        with self._lock:
            keep = self._rows.filter(~old)
            deleted = self._rows.height - keep.height
            self._rows = keep
        return deleted

    def close(self) -> None:
        pass


class MemoryQuarantine:
    """Quarantine in a Python list; idempotent on (msg_id, stage, field, reason)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: list[dict[str, object]] = []
        self._keys: set[tuple[object, ...]] = set()

    def write(self, rejects: pa.Table) -> int:
        rows = rejects.select(QUARANTINE_SCHEMA.names).cast(QUARANTINE_SCHEMA).to_pylist()
        added = 0
        with self._lock:
            now = datetime.now(UTC)
            for row in rows:
                key = tuple(row[k] or "" if k == "field" else row[k] for k in QUARANTINE_KEY)
                if key in self._keys:
                    continue
                self._keys.add(key)
                self._rows.append({**row, "quarantined_at": now})
                added += 1
        return added

    def _mine(self, tenant: str | None) -> list[dict[str, object]]:
        with self._lock:
            rows = list(self._rows)
        return [r for r in rows if tenant is None or r["tenant"] == tenant]

    def list(self, tenant: str | None = None, limit: int = 100,
             since: datetime | None = None) -> pa.Table:
        rows = [(i, r) for i, r in enumerate(self._mine(tenant))
                if since is None or r["quarantined_at"] >= utc(since)]  # type: ignore[operator]
        rows.sort(key=lambda ir: (ir[1]["quarantined_at"], ir[0]), reverse=True)
        picked = [r for _, r in rows[:max(limit, 0)]]
        return pa.Table.from_pylist(picked, schema=QUARANTINE_LIST_SCHEMA)

    def count(self, tenant: str | None = None) -> int:
        return len(self._mine(tenant))

    def reasons(self, tenant: str | None = None, limit: int = 10) -> list[tuple[str, int]]:
        """The most frequent reasons with their counts, most frequent first."""
        counts: dict[str, int] = {}
        for r in self._mine(tenant):
            counts[str(r["reason"])] = counts.get(str(r["reason"]), 0) + 1
        return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]

    def close(self) -> None:
        pass
