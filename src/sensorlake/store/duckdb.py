"""The embedded hot store: one DuckDB file, with the lake behind it for old ranges.

`readings` has no primary key or ART index (it would have to fit in memory at hundreds of
millions of rows). Insert-if-absent rests on the small `latest` table (one row per tenant,
device, metric; primary key), upserted in the same transaction as every insert, so that
every stored reading of a key has `ts <= latest.ts`. A batch row newer than its key's latest
cannot be stored yet and is inserted directly (the common case: devices report in order).
Only when some are not (late data, retries, replays) are those rows checked against
`readings`, by an anti-join restricted to their ts ranges so DuckDB prunes row groups by
their zone maps. One parent connection; every call works on its own cursor; one lock
serializes writes.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from sensorlake.errors import NotFound, QueryTimeout, SinkUnavailable
from sensorlake.model import READING_SCHEMA
from sensorlake.store import rollup_query, rollups
from sensorlake.store.base import (
    LATEST_SCHEMA,
    SERIES_SCHEMA,
    WINDOW_SCHEMA,
    ReadingQuery,
    series_schema,
)
from sensorlake.store.duckdb_sql import (
    BATCH_MINUTES,
    INSERT_LATE_ABSENT,
    INSERT_NEWER,
    LAKE_ORDER,
    LATE_TS,
    REPLACE_LATEST,
    SCHEMA_SQL,
    UPSERT_LATEST,
    UPSERT_LATEST_FROM_MINUTES,
    spans_few_minutes,
    ts_ranges,
)
from sensorlake.store.lake import ParquetLake
from sensorlake.store.memory import conform, dedupe_first
from sensorlake.store.query import (
    DUCKDB,
    latest_sql,
    matches_nothing,
    plan_parts,
    read_parquet,
    series_sql,
    ts_literal,
    utc,
    window_sql,
)


@contextlib.contextmanager
def _deadline(cur: duckdb.DuckDBPyConnection, timeout: float | None) -> Iterator[None]:
    """Interrupt `cur` after `timeout` seconds; the interruption surfaces as QueryTimeout."""
    timer = threading.Timer(timeout, cur.interrupt) if timeout else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        yield
    except duckdb.InterruptException:
        raise QueryTimeout(f"the query ran longer than {timeout:g} s and was cancelled: "
                           "narrow the range or ask for a wider `every`") from None
    finally:
        if timer is not None:
            timer.cancel()


class DuckDBStore:
    """HotStore on DuckDB; ranges older than the retention horizon come from the lake."""

    def __init__(self, path: Path, lake: ParquetLake | None = None,
                 retention_days: float = 30,
                 clock: Callable[[], datetime] | None = None, read_only: bool = False,
                 threads: int | None = None,
                 rollup_config: rollups.RollupConfig | None = None) -> None:
        self.path = Path(path)
        self.lake = lake
        self.retention = timedelta(days=retention_days)
        self._clock = clock or (lambda: datetime.now(UTC))
        self.rollups = rollup_config
        """Rollups are maintained (dirty marks, refresh) and served when set."""
        self._read_only = read_only
        self._write_lock = threading.Lock()
        self._refresh_lock = threading.RLock()
        """Rollup refreshes run one at a time on their own cursor, beside the writer: they
        only read `readings` and write the rollup tables, so DuckDB's MVCC lets a batch commit
        while a refresh runs (its snapshot deletes only the marks it saw)."""
        self._cursor_lock = threading.Lock()
        if read_only and not self.path.exists():
            raise NotFound(f"no hot store at {self.path} yet: start `sensorlake up` or "
                           "`sensorlake demo` on this --data-dir first")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.IOException as exc:
            raise SinkUnavailable(
                f"cannot open the hot store {self.path}: {exc} (is another process using it?)"
            ) from exc
        self._conn.execute("SET GLOBAL TimeZone = 'UTC'")
        if threads is not None:
            self._conn.execute(f"SET GLOBAL threads = {int(threads)}")
        if not read_only:
            self._conn.execute(SCHEMA_SQL)
            if rollup_config is not None:
                rollups.create_tables(self._conn)
        self._writer = self._conn.cursor()
        self._refresher = self._conn.cursor()

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._cursor_lock:
            cur = self._conn.cursor()
        try:
            yield cur
        finally:
            cur.close()

    def horizon(self, now: datetime | None = None) -> datetime:
        """Readings older than this leave the table (and are read from the lake)."""
        return utc(now or self._clock()) - self.retention

    # -- writes ------------------------------------------------------------------------------

    def write(self, readings: pa.Table) -> int:
        """Insert rows whose (tenant, device_id, metric, ts) is absent; first one wins."""
        batch = dedupe_first(conform(readings))
        if batch.num_rows == 0:
            return 0
        with self._write_lock:
            cur = self._writer
            cur.register("batch", batch)
            try:
                cur.execute("BEGIN TRANSACTION")
                added = cur.execute(INSERT_NEWER).fetchall()[0][0]
                if added < batch.num_rows:  # some rows are at or before their key's latest
                    late = cur.sql(LATE_TS).to_arrow_table().column("ts").to_numpy()
                    for lo, hi in ts_ranges(late):
                        span = f"{ts_literal(lo)} AND {ts_literal(hi)}"
                        added += cur.execute(
                            INSERT_LATE_ABSENT.format(span=span)).fetchall()[0][0]
                if self.rollups is not None and spans_few_minutes(batch):
                    cur.execute(BATCH_MINUTES)
                    cur.execute(UPSERT_LATEST_FROM_MINUTES)
                    cur.execute(rollups.MARK_DIRTY_MINUTES.format(relation="batch_minutes"))
                else:
                    cur.execute(UPSERT_LATEST)
                    if self.rollups is not None:
                        cur.execute(rollups.MARK_DIRTY.format(relation="batch"))
                cur.execute("COMMIT")
            except duckdb.Error as exc:
                with contextlib.suppress(duckdb.Error):
                    cur.execute("ROLLBACK")
                raise SinkUnavailable(f"hot store {self.path}: write failed: {exc}") from exc
            finally:
                cur.unregister("batch")
            return int(added)

    def span_readings(self, first: int, last: int) -> pa.Table:
        """The rows that log offsets first..last inserted (zone maps prune: offsets grow),
        in the lake's file order (DuckDB sorts faster than Arrow does)."""
        columns = ", ".join(READING_SCHEMA.names)
        with self._cursor() as cur:
            table = cur.sql(f"SELECT {columns} FROM readings WHERE log_offset BETWEEN ? AND ? "
                            f"ORDER BY {LAKE_ORDER}", params=[first, last]).to_arrow_table()
        return table.cast(READING_SCHEMA)

    def replace_span(self, first: int, last: int, readings: pa.Table,
                     device_ids: tuple[str, ...] | None = None,
                     tenant: str | None = None) -> int:
        """Replay: swap the rows first stored by offsets first..last for `readings`, in one
        transaction (see HotStore.replace_span)."""
        batch = dedupe_first(conform(readings))
        devices = "" if device_ids is None else \
            f" AND device_id IN ({', '.join('?' for _ in device_ids)})"
        if tenant is not None:
            devices += " AND tenant = ?"
        params: list[object] = [first, last, *(device_ids or ()),
                                *(() if tenant is None else (tenant,))]
        key = "r.tenant = x.tenant AND r.device_id = x.device_id AND r.metric = x.metric"
        with self._write_lock:
            cur = self._writer
            cur.register("batch", batch)
            try:
                cur.execute("BEGIN TRANSACTION")
                cur.execute("CREATE OR REPLACE TEMP TABLE gone AS SELECT DISTINCT tenant, "
                            "device_id, metric FROM readings WHERE log_offset BETWEEN ? AND ?"
                            + devices, params)
                if self.rollups is not None:  # what replay removes and adds is recomputed
                    cur.execute(rollups.MARK_DIRTY.format(
                        relation="readings WHERE log_offset BETWEEN ? AND ?" + devices), params)
                    cur.execute(rollups.MARK_DIRTY.format(relation="batch"))
                cur.execute("DELETE FROM readings WHERE log_offset BETWEEN ? AND ?" + devices,
                            params)
                bounds = "TRUE"
                if batch.num_rows:  # zone maps prune the probe to the batch's time range
                    us = pc.cast(batch.column("ts"), pa.int64())
                    bounds = (f"r.ts BETWEEN {ts_literal(pc.min(us).as_py())} AND "
                              f"{ts_literal(pc.max(us).as_py())}")
                cur.execute("CREATE OR REPLACE TEMP TABLE replayed AS SELECT x.* FROM batch x "
                            f"WHERE NOT EXISTS (SELECT 1 FROM readings r WHERE {key} AND "
                            f"r.ts = x.ts AND {bounds})")
                cur.execute("INSERT INTO readings SELECT * FROM replayed")
                cur.execute(REPLACE_LATEST)
                # a latest value whose reading is gone (no longer produced): recompute it
                cur.execute(f"DELETE FROM latest x WHERE EXISTS (SELECT 1 FROM gone r WHERE "
                            f"{key}) AND NOT EXISTS (SELECT 1 FROM readings r WHERE {key} "
                            "AND r.ts = x.ts)")
                cur.execute("INSERT INTO latest SELECT r.tenant, r.device_id, r.metric, r.ts, "
                            "r.value, r.lat, r.lon FROM readings r JOIN gone x ON "
                            f"{key} WHERE NOT EXISTS (SELECT 1 FROM latest l WHERE "
                            "l.tenant = r.tenant AND l.device_id = r.device_id AND "
                            "l.metric = r.metric) QUALIFY row_number() OVER (PARTITION BY "
                            "r.tenant, r.device_id, r.metric ORDER BY r.ts DESC) = 1")
                added = cur.sql("SELECT count(*) FROM replayed").fetchall()[0][0]
                cur.execute("COMMIT")
            except duckdb.Error as exc:
                with contextlib.suppress(duckdb.Error):
                    cur.execute("ROLLBACK")
                raise SinkUnavailable(f"hot store {self.path}: replay failed: {exc}") from exc
            finally:
                cur.unregister("batch")
            return int(added)

    def apply_retention(self, now: datetime | None = None,
                        done_offset: int | None = None) -> int:
        """Delete readings older than the horizon (the lake keeps them); rows deleted."""
        horizon = self.horizon(now)
        sql, params = "DELETE FROM readings WHERE ts < ?", [horizon]
        if done_offset is not None:
            sql, params = sql + " AND coalesce(log_offset, 0) <= ?", [horizon, done_offset]
        with self._write_lock:
            rows = self._writer.sql(sql, params=params).fetchall()
        return int(rows[0][0]) if rows else 0

    # -- rollups ------------------------------------------------------------------------------

    def refresh_rollups(self, now: datetime | None = None,
                        max_marks: int | None = None) -> rollups.RefreshResult:
        """Recompute the dirty rollup buckets in one transaction (store/rollups.py): all, or
        one chunk of about `max_marks` dirty minutes (`result.left` says what is left)."""
        if self.rollups is None or self._read_only:
            return rollups.RefreshResult()
        now = utc(now or self._clock())
        with self._refresh_lock:
            cur = self._refresher
            try:
                cur.execute("BEGIN TRANSACTION")
                result = rollups.refresh(cur, self.rollups, now, self.horizon(now),
                                         max_marks)
                cur.execute("COMMIT")
            except duckdb.Error as exc:
                with contextlib.suppress(duckdb.Error):
                    cur.execute("ROLLBACK")
                raise SinkUnavailable(f"hot store {self.path}: rollup refresh failed: "
                                      f"{exc}") from exc
        return result

    def rebuild_rollups(self, now: datetime | None = None) -> rollups.RefreshResult:
        """Recompute every rollup from the raw rows still in the hot table (after a device's
        `tz` or `cadence` changed). Buckets before the horizon are kept as they are."""
        if self.rollups is None:
            return rollups.RefreshResult()
        horizon = self.horizon(now)
        with self._refresh_lock:
            cur = self._refresher
            cur.execute("BEGIN TRANSACTION")
            for grain in rollups.GRAINS:
                cur.execute(f"DELETE FROM rollup_{grain} WHERE bucket >= ?", [horizon])
            rollups.mark_all_dirty(cur)
            cur.execute("COMMIT")
            return self.refresh_rollups(now)

    def rollup_rows(self, grain: str) -> pa.Table:
        """Every row of one rollup table, ordered by key and bucket (tests, tools)."""
        if grain not in rollups.GRAINS:
            raise ValueError(f"unknown grain {grain!r}: use one of {', '.join(rollups.GRAINS)}")
        with self._cursor() as cur:
            return cur.sql(f"SELECT * FROM rollup_{grain} ORDER BY tenant, device_id, metric, "
                           "bucket").to_arrow_table()

    # -- reads -------------------------------------------------------------------------------

    def _parts(self, query: ReadingQuery) -> list:
        horizon = self.horizon()
        cold = None
        if self.lake is not None and utc(query.start) < horizon:
            files = self.lake.files("readings", utc(query.start), min(utc(query.end), horizon))
            cold = read_parquet(files) if files else None
        return plan_parts(query, "readings", cold, horizon)

    def _series(self, query: ReadingQuery) -> tuple[str, list[object]]:
        config = self.rollups
        if query.calendar is not None and query.every is not None and config is not None:
            if query.rollup is not None:
                return rollup_query.calendar_sql(query, query.rollup, config.final_after,
                                                 self._clock())
            wide = replace(query, end=utc(query.end) + timedelta(days=32))
            return rollup_query.calendar_raw_sql(query, self._parts(wide), query.calendar,
                                                 config.tz_sql())
        if query.rollup in rollups.GRAIN_WIDTH and config is not None:
            edges = [self._parts(replace(query, start=a, end=b))
                     for a, b in rollup_query.edge_ranges(query, query.rollup)]
            return rollup_query.fixed_sql(query, query.rollup, edges, config.final_after,
                                          self._clock())
        return series_sql(query, self._parts(query), DUCKDB)

    def readings(self, query: ReadingQuery, timeout: float | None = None) -> pa.Table:
        """SERIES_SCHEMA (plus coverage, revised, final from rollups); the part of the range
        before the horizon comes from the lake. Past `timeout` seconds the query is
        interrupted (QueryTimeout)."""
        if matches_nothing(query):
            return SERIES_SCHEMA.empty_table()
        if query.rollup is not None and self.rollups is not None:
            with self._cursor() as cur:
                cut = rollup_query.dirty_cut(cur, query)
            if cut is not None:  # read your writes: what is not rolled up yet comes from raw
                head, tail = rollup_query.split_at(query, cut)
                parts = [self._read_one(q, timeout) for q in (head, tail) if q is not None]
                table = pa.concat_tables(parts, promote_options="default")
                return table.sort_by([("device_id", "ascending"), ("metric", "ascending"),
                                      ("ts", "ascending")]).slice(0, query.limit)
        return self._read_one(query, timeout)

    def _read_one(self, query: ReadingQuery, timeout: float | None) -> pa.Table:
        if matches_nothing(query):
            return _conform_series(SERIES_SCHEMA.empty_table(), series_schema(query))
        sql, params = self._series(query)
        with self._cursor() as cur, _deadline(cur, timeout):
            if self.rollups is not None and query.calendar is not None:
                cur.register("rollup_devices", self.rollups.devices())
            table = cur.sql(sql, params=params).to_arrow_table()
        return _conform_series(table, series_schema(query))

    def stream(self, query: ReadingQuery, batch_rows: int = 65_536,
               timeout: float | None = None) -> Iterator[pa.RecordBatch]:
        """SERIES_SCHEMA record batches of the whole range (lake included), for exports."""
        if matches_nothing(query):
            return
        query = replace(query, rollup=None)
        sql, params = self._series(query)
        with self._cursor() as cur, _deadline(cur, timeout):
            if self.rollups is not None and query.calendar is not None:
                cur.register("rollup_devices", self.rollups.devices())
            reader = cur.sql(sql, params=params).to_arrow_reader(batch_rows)
            schema = series_schema(query)
            for batch in reader:
                yield batch.cast(schema)

    def latest(self, tenant: str, metrics: tuple[str, ...] | None = None,
               device_ids: tuple[str, ...] | None = None) -> pa.Table:
        """LATEST_SCHEMA from the `latest` table (greatest ts ever written per key)."""
        if device_ids == ():
            return LATEST_SCHEMA.empty_table()
        sql, params = latest_sql(tenant, metrics, device_ids, "latest", DUCKDB)
        with self._cursor() as cur:
            table = cur.sql(sql, params=params).to_arrow_table()
        return table.cast(LATEST_SCHEMA)

    def window_stats(self, tenant: str, start: datetime, end: datetime,
                     metrics: tuple[str, ...] | None = None,
                     device_ids: tuple[str, ...] | None = None) -> pa.Table:
        """WINDOW_SCHEMA per (device, metric) over start <= ts < end (zone maps prune)."""
        if device_ids == ():
            return WINDOW_SCHEMA.empty_table()
        sql, params = window_sql(tenant, utc(start), utc(end), metrics, device_ids)
        with self._cursor() as cur:
            table = cur.sql(sql, params=params).to_arrow_table()
        return table.cast(WINDOW_SCHEMA)

    def count(self, tenant: str | None = None) -> int:
        sql, params = "SELECT count(*) FROM readings", []
        if tenant is not None:
            sql, params = sql + " WHERE tenant = ?", [tenant]
        with self._cursor() as cur:
            return int(cur.sql(sql, params=params).fetchall()[0][0])

    def close(self) -> None:
        with self._refresh_lock, self._write_lock:
            self._refresher.close()
            self._writer.close()
            self._conn.close()


def _conform_series(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`schema`'s columns cast, any extra columns (coverage, revised, final) after them."""
    base = table.select(schema.names).cast(schema)
    for name in table.column_names:
        if name not in schema.names:
            base = base.append_column(name, table.column(name))
    return base
