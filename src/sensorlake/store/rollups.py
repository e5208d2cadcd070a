"""Rollups in the DuckDB hot store: 1 min and 1 h (UTC), 1 d and 1 mo (the device's local zone).

Incremental, idempotent and crash-safe:

- `DuckDBStore.write` marks the (tenant, device, metric, minute) of its batch in
  `rollup_dirty`, in the write's own transaction (MARK_DIRTY: one INSERT ... SELECT DISTINCT).
- `refresh(now)` recomputes only dirty buckets, one set-based statement per grain: 1m from
  the raw readings, 1h from 1m, 1d from 1h (from 1m for zones whose offset is not a whole
  number of hours), 1mo from 1d; then clears the dirty rows, all in one transaction. A crash
  before COMMIT leaves the marks, so the next refresh recomputes the same buckets.
- Recomputing from what is stored (never adding deltas) makes late data, duplicates and
  replays exact: a duplicate recomputes identical values, so nothing changes.
- Rollups outlive raw retention: rollup rows are never deleted with raw rows, and a dirty
  minute that starts before the hot horizon is dropped without a recompute (its raw rows
  may be gone; recomputing would shrink the bucket). Its coarser buckets stay as they were.

A bucket is stored as the UTC instant of its (local) start with its end (`bucket_end`), so a
23- or 25-hour day has its true length. `revised` is set when a recompute changes a bucket
whose end + `final_after` had already passed; `final` says that end + grace has passed
(refreshed by every refresh; the query layer recomputes it at read time).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import duckdb
import pyarrow as pa

from sensorlake.derived.timezones import device_timezone, zone
from sensorlake.store.query import ts_literal

GRAINS: tuple[str, ...] = ("1m", "1h", "1d", "1mo")
GRAIN_WIDTH = {"1m": timedelta(minutes=1), "1h": timedelta(hours=1)}
"""Fixed-width (UTC) grains; 1d and 1mo are calendar grains in local time."""

CADENCE_TAG = "cadence"

COLUMNS = """
    tenant VARCHAR NOT NULL, device_id VARCHAR NOT NULL, metric VARCHAR NOT NULL,
    bucket TIMESTAMPTZ NOT NULL, bucket_end TIMESTAMPTZ NOT NULL, count BIGINT NOT NULL,
    min DOUBLE, max DOUBLE, sum DOUBLE, mean DOUBLE, first DOUBLE, first_ts TIMESTAMPTZ,
    last DOUBLE, last_ts TIMESTAMPTZ, interval_s DOUBLE, expected DOUBLE, coverage DOUBLE,
    revised BOOLEAN NOT NULL, final BOOLEAN NOT NULL, updated_at TIMESTAMPTZ NOT NULL"""
"""`interval_s`: the reading interval used for `expected` (the cadence tag, else estimated)."""

SCHEMA_SQL = "".join(f"CREATE TABLE IF NOT EXISTS rollup_{g} ({COLUMNS});\n" for g in GRAINS) + """
CREATE TABLE IF NOT EXISTS rollup_dirty (
    tenant VARCHAR NOT NULL, device_id VARCHAR NOT NULL, metric VARCHAR NOT NULL,
    minute TIMESTAMPTZ NOT NULL);
"""

def create_tables(conn: duckdb.DuckDBPyConnection) -> None:
    """Create the rollup tables; on a hot store that has readings but no rollups yet (an
    upgrade), mark every stored minute dirty so the first refresh builds them."""
    exists = conn.sql("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'rollup_dirty'"
                      ).fetchall()[0][0]
    conn.execute(SCHEMA_SQL)
    if not exists:
        conn.execute(MARK_DIRTY.format(relation="readings"))


MARK_DIRTY = """
INSERT INTO rollup_dirty SELECT DISTINCT tenant, device_id, metric,
    time_bucket(INTERVAL 1 minute, ts) FROM {relation}
"""
"""Run inside the write's transaction; the batch's keys and minutes become dirty."""

MARK_DIRTY_MINUTES = """
INSERT INTO rollup_dirty SELECT tenant, device_id, metric, minute FROM {relation}
"""
"""The same, from a relation that already holds distinct (tenant, device_id, metric, minute)."""

DEVICE_SCHEMA = pa.schema([
    pa.field("tenant", pa.string()), pa.field("device_id", pa.string()),
    pa.field("tz", pa.string()), pa.field("whole_hours", pa.bool_()),
    pa.field("cadence_s", pa.float64()),
])


@lru_cache(maxsize=512)
def whole_hour_zone(name: str) -> bool:
    """True when `name`'s UTC offset is a whole number of hours at every weekly sample from
    1970 to 2050, so its local days are made of whole UTC hours."""
    tz = zone(name)
    start = datetime(1970, 1, 1, tzinfo=UTC)
    for week in range(0, 80 * 53):
        offset = (start + timedelta(weeks=week)).astimezone(tz).utcoffset()
        if offset is not None and offset.total_seconds() % 3600:
            return False
    return True


def parse_cadence(text: str | None) -> float | None:
    """Seconds of a `cadence` tag ("60s", "5m", "1h"); None when absent or not a duration."""
    if not text:
        return None
    from sensorlake.errors import InputError
    from sensorlake.timeparse import parse_duration
    try:
        return parse_duration(text).total_seconds()
    except InputError:
        return None


def device_table(devices: Iterable[Any], tenants: dict[str, str],
                 default_tz: str) -> pa.Table:
    """DEVICE_SCHEMA rows (zone, whole-hour flag, cadence) from registry Devices."""
    rows = []
    for d in devices:
        tags = dict(d.tags or {})
        tenant = d.tenant
        tz = device_timezone(tags, tenant, tenants, default_tz)
        rows.append({"tenant": tenant, "device_id": d.id, "tz": tz,
                     "whole_hours": whole_hour_zone(tz),
                     "cadence_s": parse_cadence(tags.get(CADENCE_TAG))})
    return pa.Table.from_pylist(rows, schema=DEVICE_SCHEMA)


@dataclass
class RollupConfig:
    """What the store needs to maintain and serve rollups."""

    final_after: timedelta = timedelta(minutes=5)
    default_tz: str = "UTC"
    devices: Callable[[], pa.Table] = field(default=lambda: DEVICE_SCHEMA.empty_table())
    """The registry's devices as DEVICE_SCHEMA (zone and cadence per device)."""

    def tz_sql(self, alias: str = "m") -> str:
        """The zone of a joined device row, else the default (a validated IANA name)."""
        zone(self.default_tz)
        return f"coalesce({alias}.tz, '{self.default_tz}')"


@dataclass
class RefreshResult:
    minutes: int = 0
    """Dirty minutes recomputed."""
    skipped: int = 0
    """Dirty minutes before the hot horizon, dropped without a recompute."""
    rows: dict[str, int] = field(default_factory=dict)
    """Buckets written per grain."""
    left: int = 0
    """Dirty marks left for a later call (a refresh with `max_marks`)."""


KEY = "tenant, device_id, metric"
ON_KEY = "{a}.tenant = {b}.tenant AND {a}.device_id = {b}.device_id AND {a}.metric = {b}.metric"


def ranges_sql(column: str, ranges: list[tuple[int, int]], pad_us: int) -> str:
    """`column` within any of the inclusive µs ranges, widened by `pad_us` at the end (so
    DuckDB prunes row groups by their zone maps)."""
    if not ranges:
        return "FALSE"
    parts = [f"{column} BETWEEN {ts_literal(lo)} AND {ts_literal(hi + pad_us)}"
             for lo, hi in ranges]
    return "(" + " OR ".join(parts) + ")"


def _ranges(cur: duckdb.DuckDBPyConnection, table: str, max_width_us: int) -> list[tuple[int, int]]:
    from sensorlake.store.duckdb_sql import ts_ranges
    values = cur.sql(f"SELECT DISTINCT epoch_us(bucket) AS b FROM {table}").to_arrow_table()
    return ts_ranges(values.column("b").to_numpy(), gap=max(max_width_us, 3_600_000_000))


CHUNK_KEYS = """
CREATE OR REPLACE TEMP TABLE refresh_keys AS
SELECT tenant, device_id, metric FROM (
    SELECT tenant, device_id, metric, n, sum(n) OVER (ORDER BY first_minute, tenant, device_id,
           metric ROWS UNBOUNDED PRECEDING) AS running
    FROM (SELECT tenant, device_id, metric, count(*) AS n, min(minute) AS first_minute
          FROM rollup_dirty GROUP BY ALL))
WHERE running - n < ?
"""
"""The keys of one refresh chunk: oldest first, until about `max_marks` marks (>= one key)."""
IN_CHUNK = ("EXISTS (SELECT 1 FROM refresh_keys k WHERE k.tenant = rollup_dirty.tenant AND "
            "k.device_id = rollup_dirty.device_id AND k.metric = rollup_dirty.metric)")

AGG_FROM_RAW = """
SELECT s.tenant, s.device_id, s.metric, s.bucket, s.bucket + INTERVAL 1 minute AS bucket_end,
       count(*) AS count, min(value) AS min, max(value) AS max, fsum(value) AS sum,
       fsum(value) / count(*) AS mean, arg_min(value, ts) AS first, min(ts) AS first_ts,
       arg_max(value, ts) AS last, max(ts) AS last_ts,
       CASE WHEN count(*) > 1 THEN epoch(max(ts) - min(ts)) / (count(*) - 1) END AS est
FROM (SELECT r.tenant, r.device_id, r.metric, time_bucket(INTERVAL 1 minute, r.ts) AS bucket,
             r.ts, r.value FROM readings r WHERE {prune}) s
SEMI JOIN dirty_1m d ON {on_key} AND d.bucket = s.bucket
GROUP BY s.tenant, s.device_id, s.metric, s.bucket
"""
"""1m buckets of the dirty minutes from the raw rows; `est` = the mean interval in the minute.
`fsum` (compensated) and the ordered sums below keep a recompute of the same values equal to
the bit, whatever order the rows are scanned in."""

CHILD_ROWS = """
SELECT c.tenant, c.device_id, c.metric, c.bucket, c.count, c.min, c.max, c.sum, c.first,
       c.first_ts, c.last, c.last_ts, c.interval_s, {parent} AS parent
FROM rollup_{child} c {joins} WHERE {prune} AND {where}"""
"""Child rows of the dirty parents' time ranges, each with its parent bucket."""

AGG_FROM_CHILD = """
SELECT c.tenant, c.device_id, c.metric, c.parent AS bucket,
       sum(count) AS count, min(c.min) AS min, max(c.max) AS max,
       sum(c.sum ORDER BY c.bucket) AS sum, sum(c.sum ORDER BY c.bucket) / sum(count) AS mean,
       arg_min(c.first, c.first_ts) AS first, min(c.first_ts) AS first_ts,
       arg_max(c.last, c.last_ts) AS last, max(c.last_ts) AS last_ts,
       coalesce(median(c.interval_s), CASE WHEN sum(count) > 1 THEN
           epoch(max(c.last_ts) - min(c.first_ts)) / (sum(count) - 1) END) AS est
FROM ({children}) c
SEMI JOIN dirty_{grain} d ON {on_key} AND d.bucket = c.parent
GROUP BY c.tenant, c.device_id, c.metric, c.parent
"""
"""A coarser grain from its child rows; `est` = the median child interval (robust to gaps),
else the mean interval over the bucket. Sums are ordered so a recompute is bit-identical
(children never share a bucket start)."""

DEVICE_JOIN = "LEFT JOIN rollup_devices m ON m.tenant = {a}.tenant AND m.device_id = {a}.device_id"

HOUR_DAYS = """
CREATE OR REPLACE TEMP TABLE hour_days AS
WITH days AS (SELECT DISTINCT {tz} AS tz, d.bucket FROM dirty_1d d {join} WHERE NOT {whole}),
hours AS (SELECT DISTINCT tz, unnest(range(time_bucket(INTERVAL 1 hour, bucket),
                                           bucket + INTERVAL 26 hours, INTERVAL 1 hour)) AS hour
          FROM days)
SELECT tz, hour, time_bucket(INTERVAL 1 day, hour, tz) AS day_a,
       time_bucket(INTERVAL 1 day, hour + INTERVAL 59 minutes, tz) AS day_b FROM hours
"""
"""For zones not on whole hours: the local day(s) each UTC hour of the dirty days touches.
A day boundary (at a whole minute) falls at most once inside an hour, at `day_b`, so a
minute's day is `day_b` from there on and `day_a` before: zone arithmetic once per hour,
not once per minute row."""


def refresh(cur: duckdb.DuckDBPyConnection, config: RollupConfig, now: datetime,
            horizon: datetime, max_marks: int | None = None) -> RefreshResult:
    """Recompute the dirty buckets and clear their marks: all of them, or with `max_marks`
    the keys (device, metric) holding about that many marks, oldest first, each key whole
    (so every grain of a key is rebuilt from fresh children). A backlog then drains over
    several short calls; queries read what is still dirty from raw. The caller holds the
    write lock and runs this inside BEGIN ... COMMIT; `result.left` counts the marks left."""
    result = RefreshResult()
    pending = cur.sql("SELECT count(*) FROM rollup_dirty").fetchall()[0][0]
    if not pending:
        return result
    upto = "TRUE"
    if max_marks is not None and pending > max_marks:
        cur.execute(CHUNK_KEYS, [max_marks])
        upto = IN_CHUNK
    tz = config.tz_sql()
    cur.register("rollup_devices", config.devices())
    try:
        cur.execute("CREATE OR REPLACE TEMP TABLE dirty_1m AS SELECT DISTINCT tenant, device_id, "
                    f"metric, minute AS bucket FROM rollup_dirty WHERE minute >= ? AND {upto}",
                    [horizon])
        result.minutes = cur.sql("SELECT count(*) FROM dirty_1m").fetchall()[0][0]
        result.skipped = cur.sql("SELECT count(*) FROM (SELECT DISTINCT * FROM rollup_dirty "
                                 f"WHERE minute < ? AND {upto})",
                                 params=[horizon]).fetchall()[0][0]
        if result.minutes:
            ranges = _ranges(cur, "dirty_1m", 60_000_000)
            prune = ranges_sql("r.ts", ranges, 60_000_000 - 1)
            on_key = ON_KEY.format(a="d", b="s")
            sql = AGG_FROM_RAW.format(prune=prune, on_key=on_key)
            sql = (f"SELECT a.*, coalesce(m.cadence_s, a.est) AS interval_s FROM ({sql}) a "
                   f"{DEVICE_JOIN.format(a='a')}")
            result.rows["1m"] = _merge(cur, "1m", sql, ranges, 60_000_000, config, now)
            _coarser(cur, config, now, tz, result)
        cur.execute(f"DELETE FROM rollup_dirty WHERE {upto}")
        result.left = int(cur.sql("SELECT count(*) FROM rollup_dirty").fetchall()[0][0])
        _mark_final(cur, config, now)
    finally:
        cur.unregister("rollup_devices")
    return result


def _end(grain: str, tz: str, column: str) -> str:
    """The end of the bucket starting at `column` (a local day or month for 1d / 1mo)."""
    if grain in GRAIN_WIDTH:
        return f"{column} + INTERVAL {GRAIN_WIDTH[grain].seconds // 60} MINUTES"
    unit = {"1d": "1 day", "1mo": "1 month"}[grain]
    return f"(({column} AT TIME ZONE {tz}) + INTERVAL {unit}) AT TIME ZONE {tz}"


def _coarser(cur: duckdb.DuckDBPyConnection, config: RollupConfig, now: datetime, tz: str,
             result: RefreshResult) -> None:
    """1h from 1m, 1d from 1h (1m for zones not on whole hours), 1mo from 1d."""
    whole = f"coalesce(m.whole_hours, {str(whole_hour_zone(config.default_tz)).upper()})"
    on_key = ON_KEY.format(a="d", b="c")
    hour = "time_bucket(INTERVAL 1 hour, {col})"
    # dirty parents
    cur.execute(f"CREATE OR REPLACE TEMP TABLE dirty_1h AS SELECT DISTINCT tenant, device_id, "
                f"metric, {hour.format(col='bucket')} AS bucket FROM dirty_1m")
    join_x = DEVICE_JOIN.format(a="x")
    cur.execute(f"""CREATE OR REPLACE TEMP TABLE dirty_1d AS
        SELECT DISTINCT x.tenant, x.device_id, x.metric,
               time_bucket(INTERVAL 1 day, x.bucket, {tz}) AS bucket FROM dirty_1h x {join_x}
        UNION
        SELECT x.tenant, x.device_id, x.metric,
               time_bucket(INTERVAL 1 day, x.bucket + INTERVAL 59 minutes, {tz})
        FROM dirty_1h x {join_x} WHERE NOT {whole}""")
    cur.execute(HOUR_DAYS.format(tz=tz, join=DEVICE_JOIN.format(a="d"), whole=whole))
    cur.execute(f"CREATE OR REPLACE TEMP TABLE dirty_1mo AS SELECT DISTINCT x.tenant, "
                f"x.device_id, x.metric, time_bucket(INTERVAL 1 month, x.bucket, {tz}) AS "
                f"bucket FROM dirty_1d x {join_x}")
    join_c = DEVICE_JOIN.format(a="c")
    widths = {"1h": 3_600_000_000, "1d": 26 * 3_600_000_000, "1mo": 32 * 86_400_000_000}
    for grain, width in widths.items():
        ranges = _ranges(cur, f"dirty_{grain}", width)
        prune = ranges_sql("c.bucket", ranges, width)
        def rows(child: str, parent: str, joins: str, where: str, prune: str = prune) -> str:
            return CHILD_ROWS.format(child=child, parent=parent, joins=joins, where=where,
                                     prune=prune)
        if grain == "1h":
            parts = [rows("1m", hour.format(col="c.bucket"), "", "TRUE")]
        elif grain == "1d":
            # whole-hour zones: from 1h. Others: the hours inside one local day from 1h, the
            # minutes of the hour a local day starts in from 1m (hour_days says which)
            by_hour = "JOIN hour_days h ON h.tz = {tz} AND h.hour = {hour}"
            parts = [rows("1h", f"time_bucket(INTERVAL 1 day, c.bucket, {tz})", join_c, whole),
                     rows("1h", "h.day_a", f"{join_c} {by_hour.format(tz=tz, hour='c.bucket')}",
                          f"NOT {whole} AND h.day_a = h.day_b"),
                     rows("1m", "CASE WHEN c.bucket >= h.day_b THEN h.day_b ELSE h.day_a END",
                          f"{join_c} "
                          f"{by_hour.format(tz=tz, hour=hour.format(col='c.bucket'))}",
                          f"NOT {whole} AND h.day_a <> h.day_b")]
        else:
            parts = [rows("1d", f"time_bucket(INTERVAL 1 month, c.bucket, {tz})", join_c,
                          "TRUE")]
        sql = AGG_FROM_CHILD.format(children="\nUNION ALL\n".join(parts), grain=grain,
                                    on_key=on_key)
        sql = (f"SELECT a.*, {_end(grain, tz, 'a.bucket')} AS bucket_end, "
               f"coalesce(m.cadence_s, a.est) AS interval_s FROM ({sql}) a "
               f"{DEVICE_JOIN.format(a='a')}")
        result.rows[grain] = _merge(cur, grain, sql, ranges, width, config, now)


CHANGED = " OR ".join(f"o.{c} IS DISTINCT FROM f.{c}" for c in
                      ("count", "min", "max", "first", "first_ts", "last", "last_ts")) + \
    " OR abs(o.sum - f.sum) > 1e-9 * greatest(1.0, abs(o.sum))"
"""Whether a recompute changed a bucket (sums compared with a relative tolerance: the same
values summed in another order may differ in the last bits)."""


def _merge(cur: duckdb.DuckDBPyConnection, grain: str, fresh_sql: str,
           ranges: list[tuple[int, int]], width_us: int, config: RollupConfig,
           now: datetime) -> int:
    """Replace the dirty buckets of `rollup_<grain>` with their recomputed rows (a bucket
    with no rows left is deleted), carrying or setting `revised`."""
    table = f"rollup_{grain}"
    prune = ranges_sql("o.bucket", ranges, width_us)
    grace = f"INTERVAL {int(config.final_after.total_seconds() * 1e6)} MICROSECONDS"
    now_sql = ts_literal(int(now.timestamp() * 1_000_000))
    cur.execute(f"CREATE OR REPLACE TEMP TABLE fresh AS {fresh_sql}")
    cur.execute(f"""
CREATE OR REPLACE TEMP TABLE merged AS
SELECT f.tenant, f.device_id, f.metric, f.bucket, f.bucket_end, f.count, f.min, f.max, f.sum,
       f.mean, f.first, f.first_ts, f.last, f.last_ts, f.interval_s,
       epoch(f.bucket_end - f.bucket) / f.interval_s AS expected,
       least(100.0, 100.0 * f.count * f.interval_s / epoch(f.bucket_end - f.bucket)) AS coverage,
       CASE WHEN o.bucket IS NULL THEN FALSE WHEN o.revised THEN TRUE
            WHEN o.bucket_end + {grace} <= {now_sql} AND ({CHANGED}) THEN TRUE
            ELSE FALSE END AS revised,
       f.bucket_end + {grace} <= {now_sql} AS final, {now_sql} AS updated_at
FROM fresh f LEFT JOIN (SELECT * FROM {table} o WHERE {prune}) o
  ON {ON_KEY.format(a="o", b="f")} AND o.bucket = f.bucket""")
    cur.execute(f"DELETE FROM {table} o USING dirty_{grain} d WHERE {prune} AND "
                f"{ON_KEY.format(a='o', b='d')} AND o.bucket = d.bucket")
    cur.execute(f"INSERT INTO {table} SELECT * FROM merged")
    return int(cur.sql("SELECT count(*) FROM merged").fetchall()[0][0])


def _mark_final(cur: duckdb.DuckDBPyConnection, config: RollupConfig, now: datetime) -> None:
    """Set `final` on buckets whose end + grace has passed since they were written."""
    cut = ts_literal(int((now - config.final_after).timestamp() * 1_000_000))
    for grain in GRAINS:
        cur.execute(f"UPDATE rollup_{grain} SET final = TRUE WHERE NOT final AND "
                    f"bucket_end <= {cut}")


def dirty_count(cur: duckdb.DuckDBPyConnection) -> int:
    return int(cur.sql("SELECT count(*) FROM rollup_dirty").fetchall()[0][0])


def mark_all_dirty(cur: duckdb.DuckDBPyConnection) -> None:
    """Mark every stored raw minute dirty (after a device's zone or cadence changed, with
    the rollups from the hot horizon on deleted first by the caller)."""
    cur.execute(MARK_DIRTY.format(relation="readings"))


def registry_devices(registry: Any, change_number: Callable[[], int],
                     tenants: dict[str, str], default_tz: str) -> Callable[[], pa.Table]:
    """A `RollupConfig.devices` over the device registry, rebuilt when the catalog changes."""
    cache: dict[str, Any] = {"version": None, "table": DEVICE_SCHEMA.empty_table()}

    def devices() -> pa.Table:
        version = change_number()
        if version != cache["version"]:
            cache["table"] = device_table(registry.list(), tenants, default_tz)
            cache["version"] = version
        return cache["table"]

    return devices


def config_from(settings: Any, registry: Any, change_number: Callable[[], int]
                ) -> RollupConfig | None:
    """The store's RollupConfig from Settings (None when `rollups.enabled` is false)."""
    if not settings.rollups.enabled:
        return None
    time = settings.time
    return RollupConfig(final_after=timedelta(seconds=settings.rollups.final_after_seconds),
                        default_tz=time.timezone,
                        devices=registry_devices(registry, change_number, time.tenants,
                                                 time.timezone))
