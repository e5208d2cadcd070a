"""The embedded hot store's SQL: its schema, and the statements of the insert-if-absent
write and of replay (see store/duckdb.py for how they fit together)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sensorlake.store.lake import HOUR_US, SORT_KEY

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS readings (
    tenant VARCHAR NOT NULL, device_id VARCHAR NOT NULL, metric VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL, value DOUBLE NOT NULL, quality SMALLINT NOT NULL,
    received_at TIMESTAMPTZ NOT NULL, lat DOUBLE, lon DOUBLE, log_offset BIGINT);
CREATE TABLE IF NOT EXISTS latest (
    tenant VARCHAR NOT NULL, device_id VARCHAR NOT NULL, metric VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL, value DOUBLE NOT NULL, lat DOUBLE, lon DOUBLE,
    PRIMARY KEY (tenant, device_id, metric));
"""

UPSERT_LATEST = """
INSERT INTO latest
SELECT tenant, device_id, metric, ts, newest.value, newest.lat, newest.lon FROM (
    SELECT tenant, device_id, metric, max(ts) AS ts,
           arg_max({'value': value, 'lat': lat, 'lon': lon}, ts) AS newest
    FROM batch GROUP BY tenant, device_id, metric)
ON CONFLICT (tenant, device_id, metric) DO UPDATE
SET ts = excluded.ts, value = excluded.value, lat = excluded.lat, lon = excluded.lon
WHERE excluded.ts > latest.ts
"""
"""The newest row of each key in the batch becomes its latest, unless one at least as new is
stored (duplicates and late rows never move it: first stored wins, as in `readings`)."""

BATCH_MINUTES = """
CREATE OR REPLACE TEMP TABLE batch_minutes AS
SELECT tenant, device_id, metric, time_bucket(INTERVAL 1 minute, ts) AS minute, max(ts) AS ts,
       arg_max({'value': value, 'lat': lat, 'lon': lon}, ts) AS newest
FROM batch GROUP BY ALL
"""
"""With rollups, for a batch within FEW_MINUTES_US: one pass over the batch per (key, minute)
feeds both the dirty marks and the latest upsert (about 0.26 against 0.33 µs per row for two
passes, 1,000 devices at 1 Hz). When nearly every row is its own minute (a backfill) the
struct arg_max per group costs more than it saves (0.8 against 0.5), so a batch spanning more
takes the two passes."""

FEW_MINUTES_US = 15 * 60_000_000

UPSERT_LATEST_FROM_MINUTES = UPSERT_LATEST.replace(
    "arg_max({'value': value, 'lat': lat, 'lon': lon}, ts)", "arg_max(newest, ts)").replace(
    "FROM batch GROUP BY", "FROM batch_minutes GROUP BY")

LAKE_ORDER = f"epoch_us(ts) // {HOUR_US}, {', '.join(SORT_KEY['readings'])}"
"""The order of rows in a lake readings/ file: by UTC hour, then store.lake.SORT_KEY."""

INSERT_NEWER = """
INSERT INTO readings
SELECT b.* FROM batch b LEFT JOIN latest l
  ON l.tenant = b.tenant AND l.device_id = b.device_id AND l.metric = b.metric
WHERE l.ts IS NULL OR b.ts > l.ts
"""

LATE_TS = """
SELECT epoch_us(b.ts) AS ts FROM batch b JOIN latest l
  ON l.tenant = b.tenant AND l.device_id = b.device_id AND l.metric = b.metric
WHERE b.ts <= l.ts
"""

INSERT_LATE_ABSENT = """
INSERT INTO readings
SELECT b.* FROM batch b JOIN latest l
  ON l.tenant = b.tenant AND l.device_id = b.device_id AND l.metric = b.metric
WHERE b.ts <= l.ts AND b.ts BETWEEN {span} AND NOT EXISTS (
  SELECT 1 FROM readings r WHERE r.tenant = b.tenant AND r.device_id = b.device_id
  AND r.metric = b.metric AND r.ts = b.ts AND r.ts BETWEEN {span})
"""

REPLACE_LATEST = UPSERT_LATEST.replace("FROM batch GROUP BY", "FROM replayed GROUP BY") \
    .replace("excluded.ts > latest.ts", "excluded.ts >= latest.ts")
"""Replay: the rows it inserted move `latest`, a re-derived reading at the same ts too (its
value was fixed). Rows it did not insert (another offset holds the key) never do."""

RANGE_GAP_US = 3_600_000_000
"""Readings further apart than this in one batch are probed as separate ts ranges."""
MAX_RANGES = 8


def ts_ranges(ts_us: np.ndarray, gap: int = RANGE_GAP_US,
              max_ranges: int = MAX_RANGES) -> list[tuple[int, int]]:
    """Inclusive (lo, hi) ranges covering every value, split at the widest gaps over `gap`,
    so a batch with a few late readings does not make the anti-join scan days of data."""
    values = np.unique(ts_us)
    if len(values) == 0:
        return []
    gaps = np.diff(values)
    cuts = np.flatnonzero(gaps > gap)
    if len(cuts) >= max_ranges:
        cuts = np.sort(cuts[np.argsort(gaps[cuts], kind="stable")[-(max_ranges - 1):]])
    starts = [0, *(cuts + 1).tolist()]
    ends = [*cuts.tolist(), len(values) - 1]
    return [(int(values[a]), int(values[b])) for a, b in zip(starts, ends, strict=True)]


def spans_few_minutes(batch: pa.Table) -> bool:
    """Whether the batch's readings lie within FEW_MINUTES_US of each other."""
    bounds = pc.min_max(pc.cast(batch.column("ts"), pa.int64())).as_py()
    return bounds["max"] - bounds["min"] <= FEW_MINUTES_US
