"""Sink and query protocols.

The commit order is fixed (ARCHITECTURE.md, "Acknowledge after commit"): a worker writes the
lake files of a span and the hot store, and only after both returned does it acknowledge the
span in the log. Every sink is therefore idempotent: writing the same readings twice stores
them once (hot store: insert-if-absent on READING_KEY; lake: files named by the log span and
created only if absent; quarantine: keyed by msg_id, stage, field and reason).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import pyarrow as pa

from sensorlake.log.base import Span
from sensorlake.model import READING_SCHEMA, TS_TYPE
from sensorlake.process.base import REJECT_SCHEMA

HOT_SCHEMA = READING_SCHEMA.append(pa.field("log_offset", pa.int64()))
"""Rows of the hot store: a reading plus the log offset of the message that first stored it.

That offset is what makes the lake exact: the `readings/` files of a log span hold precisely
the rows that span inserted (`span_readings`), so a reading that arrives again in a later
message is neither stored twice in the hot store nor written twice to the lake, and a span
replayed after a crash yields the same rows."""

Aggregate = Literal["mean", "min", "max", "sum", "count", "first", "last"]
AGGREGATES: tuple[str, ...] = ("mean", "min", "max", "sum", "count", "first", "last")

QUARANTINE_SCHEMA = (
    REJECT_SCHEMA.append(pa.field("source", pa.string()))
    .append(pa.field("received_at", TS_TYPE))
    .append(pa.field("payload", pa.binary()))
)
"""What the quarantine keeps: the reject, its source, when it arrived and its raw bytes."""

SERIES_SCHEMA = pa.schema(
    [
        pa.field("device_id", pa.string()),
        pa.field("metric", pa.string()),
        pa.field("ts", TS_TYPE),
        pa.field("value", pa.float64()),
        pa.field("count", pa.int64()),
    ]
)
"""Result of a range query: one row per (device, metric, bucket or reading)."""

LATEST_SCHEMA = pa.schema(
    [
        pa.field("device_id", pa.string()),
        pa.field("metric", pa.string()),
        pa.field("ts", TS_TYPE),
        pa.field("value", pa.float64()),
        pa.field("lat", pa.float64()),
        pa.field("lon", pa.float64()),
    ]
)

WINDOW_SCHEMA = pa.schema(
    [
        pa.field("device_id", pa.string()),
        pa.field("metric", pa.string()),
        pa.field("count", pa.int64()),
        pa.field("stamps", pa.int64()),
        pa.field("mean", pa.float64()),
        pa.field("min", pa.float64()),
        pa.field("max", pa.float64()),
        pa.field("first", pa.float64()),
        pa.field("last", pa.float64()),
        pa.field("first_ts", TS_TYPE),
        pa.field("last_ts", TS_TYPE),
    ]
)
"""Result of `window_stats`: one row per (device, metric) with readings in the window;
`stamps` counts distinct timestamps, `first`/`last` are the values at `first_ts`/`last_ts`."""


@dataclass(frozen=True)
class ReadingQuery:
    """A time-range query over one tenant's readings, half-open: start <= ts < end."""

    tenant: str
    metrics: tuple[str, ...]
    start: datetime
    end: datetime
    device_ids: tuple[str, ...] | None = None
    """None means every device of the tenant (the caller has already authorized that)."""
    every: timedelta | None = None
    """Bucket width; None returns raw readings."""
    agg: Aggregate = "mean"
    limit: int = 100_000
    exclude_quality: int = 0
    """Leave out readings whose `quality` has any of these bits (0 = keep every reading)."""
    after: tuple[str, str, datetime] | None = None
    """Keyset paging: only rows after this (device_id, metric, ts) in the result order."""
    calendar: Literal["day", "month"] | None = None
    """With `every`: local calendar days or months of each device (store/rollup_query.py)."""
    rollup: str | None = None
    """The rollup grain the planner chose (1m, 1h, 1d, 1mo); None reads raw readings."""
    require_quality: int = 0
    """Keep only readings whose `quality` has any of these bits (0 = no such filter)."""
    with_quality: bool = False
    """Raw readings only (every is None): add each reading's `quality` column."""


def series_schema(query: ReadingQuery) -> pa.Schema:
    """SERIES_SCHEMA, plus `quality` (int16) for raw readings asked `with_quality`."""
    if query.with_quality and query.every is None:
        return SERIES_SCHEMA.append(pa.field("quality", pa.int16()))
    return SERIES_SCHEMA


@runtime_checkable
class HotStore(Protocol):
    """Recent readings, queryable within a second of their commit."""

    def write(self, readings: pa.Table) -> int:
        """Insert rows whose key is absent; committed on return. `readings` has READING_SCHEMA
        plus, from the pipeline, `log_offset`. Returns the number of rows newly stored."""
        ...

    def span_readings(self, first: int, last: int) -> pa.Table:
        """READING_SCHEMA rows first stored by log offsets first..last (what the lake gets)."""
        ...

    def readings(self, query: ReadingQuery, timeout: float | None = None) -> pa.Table:
        """SERIES_SCHEMA rows ordered by device, metric, ts. Ranges older than the hot
        horizon are answered from the lake transparently. A query running longer than
        `timeout` seconds raises QueryTimeout."""
        ...

    def latest(self, tenant: str, metrics: tuple[str, ...] | None = None,
               device_ids: tuple[str, ...] | None = None) -> pa.Table:
        """LATEST_SCHEMA: the newest reading per (device, metric)."""
        ...

    def count(self, tenant: str | None = None) -> int:
        ...

    def window_stats(self, tenant: str, start: datetime, end: datetime,
                     metrics: tuple[str, ...] | None = None,
                     device_ids: tuple[str, ...] | None = None) -> pa.Table:
        """WINDOW_SCHEMA aggregates per (device, metric) of start <= ts < end, from the hot
        table only (alerts and status look at recent windows)."""
        ...

    def replace_span(self, first: int, last: int, readings: pa.Table,
                     device_ids: tuple[str, ...] | None = None,
                     tenant: str | None = None) -> int:
        """Replay: in one transaction, delete the rows first stored by log offsets
        first..last (of `tenant` and `device_ids`, or all), then insert `readings`
        (HOT_SCHEMA, log_offset inside the span) whose key is absent; `latest` follows.
        Returns rows inserted."""
        ...

    def apply_retention(self, now: datetime | None = None,
                        done_offset: int | None = None) -> int:
        """Delete readings older than the retention whose log offset is at most
        `done_offset` (already in the lake); returns rows deleted."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Lake(Protocol):
    """Hive-partitioned Parquet: `raw/` (envelopes) and `readings/`, by date and hour."""

    root: Path

    def write_span(self, dataset: Literal["raw", "readings"], span: Span,
                   table: pa.Table) -> list[str]:
        """Write `table` as one file per date/hour partition named by `span`, each created
        only if absent and durable (fsync) on return. Returns the partition paths written or
        already present. Re-writing the same span changes nothing."""
        ...

    def glob(self, dataset: Literal["raw", "readings"]) -> str:
        """A path pattern DuckDB's read_parquet accepts for the whole dataset."""
        ...


@runtime_checkable
class Quarantine(Protocol):
    """Dead letters: rejected input with its reason and raw bytes."""

    def write(self, rejects: pa.Table) -> int:
        """QUARANTINE_SCHEMA rows; idempotent on (msg_id, stage, field, reason)."""
        ...

    def list(self, tenant: str | None = None, limit: int = 100,
             since: datetime | None = None) -> pa.Table:
        """Newest first; columns of QUARANTINE_SCHEMA plus `quarantined_at`."""
        ...

    def count(self, tenant: str | None = None) -> int: ...

    def close(self) -> None: ...
