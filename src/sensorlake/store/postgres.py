"""The server profile's hot store: PostgreSQL, with the lake behind it for old ranges.

Writes: the batch (deduplicated first-wins in Arrow) is COPYed into a per-connection temp
staging table, then `INSERT ... SELECT ... ORDER BY key ON CONFLICT DO NOTHING` moves the
absent rows into the partitioned `readings`, and `latest` is upserted from the rows actually
inserted, in the same statement. The sorted insert gives every writer the same lock order,
so concurrent workers do not deadlock on shared keys.

`commit_batch` is what the server workers call: in one transaction it marks the batch's log
offsets as processed (skipping offsets already processed, so a redelivered message stores
nothing new even if the registry changed since), stores the readings of the fresh offsets and
their rejects in the quarantine. The lake exporter (`sensorlake.server.exporter`) reads those
marks to know which log spans are complete.

Retention drops whole partitions older than the horizon once everything in them is in the
lake. Queries use `store/query.py` (POSTGRES dialect); a range that reaches past the horizon
is answered by DuckDB over the lake files plus the hot rows fetched from PostgreSQL.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import duckdb
import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from sensorlake.config import PostgresSettings
from sensorlake.model import READING_SCHEMA
from sensorlake.store.base import (
    LATEST_SCHEMA,
    SERIES_SCHEMA,
    WINDOW_SCHEMA,
    Lake,
    ReadingQuery,
    series_schema,
)
from sensorlake.store.memory import conform, dedupe_first
from sensorlake.store.pg_copy import copy_in, copy_out, us_expr
from sensorlake.store.pg_quarantine import insert_rejects
from sensorlake.store.pg_schema import (
    TRANSIENT,
    Partitions,
    configure,
    connect,
    has_timescale,
    lock_key,
    migrate,
    unavailable,
)
from sensorlake.store.query import (
    DUCKDB,
    POSTGRES,
    Part,
    latest_sql,
    matches_nothing,
    plan_parts,
    series_sql,
    source_sql,
    utc,
    window_sql,
)

REWRITE_LOCK = "hot-rewrite"
"""The advisory lock a replay window holds; retention does not run while it is held."""

STAGING = """
CREATE TEMP TABLE IF NOT EXISTS staging (
    tenant text, device_id text, metric text, ts_us bigint, value double precision,
    quality smallint, received_us bigint, lat double precision, lon double precision,
    log_offset bigint) ON COMMIT DELETE ROWS
"""

MOVE = """
INSERT INTO readings (tenant, device_id, metric, ts, value, quality, received_at, lat, lon,
                      log_offset)
SELECT tenant, device_id, metric, TIMESTAMPTZ 'epoch' + ts_us * INTERVAL '1 microsecond',
       value, quality, TIMESTAMPTZ 'epoch' + received_us * INTERVAL '1 microsecond',
       lat, lon, log_offset
FROM staging
ON CONFLICT DO NOTHING
"""
"""Staging rows arrive sorted by key (sorted in Arrow before the COPY), so concurrent
writers take row locks in the same order; a deadlock all the same is retried."""

UPSERT_LATEST = """
INSERT INTO latest
SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::timestamptz[],
                     %s::double precision[], %s::double precision[], %s::double precision[])
ON CONFLICT (tenant, device_id, metric) DO UPDATE
SET ts = excluded.ts, value = excluded.value, lat = excluded.lat, lon = excluded.lon
WHERE excluded.ts > latest.ts
"""
"""One row per (tenant, device, metric): the batch's newest. Rows the INSERT skipped as
conflicts may take part: their ts is never newer than `latest` already holds (the row they
collided with updated it), so the result is the same as from the inserted rows alone."""

MARK = """
INSERT INTO processed
SELECT o FROM unnest(%s::bigint[]) AS o
WHERE o > (SELECT exported FROM lake_export WHERE id = 1)
ORDER BY o ON CONFLICT DO NOTHING RETURNING log_offset
"""


class PostgresStore:
    """HotStore on PostgreSQL (the server profile); thread-safe."""

    def __init__(self, settings: PostgresSettings, lake: Lake | None = None,
                 retention_days: float = 30,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.settings = settings
        self.lake = lake
        self.retention = timedelta(days=retention_days)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._write_lock = threading.Lock()
        setup = connect(settings, autocommit=True)
        try:
            migrate(setup, settings.partition_days)
            self.partitions = Partitions(settings.partition_days, has_timescale(setup))
        finally:
            setup.close()
        self._writer: psycopg.Connection | None = None
        self.pool = ConnectionPool(
            settings.dsn.get_secret_value(), min_size=0, max_size=settings.pool_size,
            open=True, configure=self._configure_reader, timeout=settings.connect_timeout_seconds,
            kwargs={"connect_timeout": max(1, round(settings.connect_timeout_seconds))})

    def _configure_reader(self, conn: psycopg.Connection) -> None:
        conn.autocommit = True
        configure(conn, self.settings.schema_name)

    @contextlib.contextmanager
    def _read(self, what: str) -> Iterator[psycopg.Connection]:
        try:
            with self.pool.connection() as conn:
                yield conn
        except (*TRANSIENT, PoolTimeout) as exc:
            raise unavailable(what, exc) from exc

    @contextlib.contextmanager
    def writing(self, what: str) -> Iterator[psycopg.Connection]:
        """The writer connection inside one transaction; reconnects after a failure."""
        with self._write_lock:
            try:
                if self._writer is None or self._writer.closed:
                    self._writer = connect(self.settings)
                    self._writer.execute(STAGING)
                    self._writer.commit()
                conn = self._writer
                with conn.transaction():
                    yield conn
            except TRANSIENT as exc:
                self._drop_writer()
                raise unavailable(what, exc) from exc
            except BaseException:
                if self._writer is not None and self._writer.broken:
                    self._drop_writer()
                raise

    def _drop_writer(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
        self._writer = None

    def horizon(self, now: datetime | None = None) -> datetime:
        return utc(now or self._clock()) - self.retention

    # -- writes ------------------------------------------------------------------------------

    def write(self, readings: pa.Table) -> int:
        """Insert rows whose (tenant, device_id, metric, ts) is absent; first one wins."""
        batch = self._prepare(readings)
        if batch.num_rows == 0:
            return 0
        self._ensure_partitions(batch)
        with self.writing("write") as conn:
            return self._move(conn, batch)

    def commit_batch(self, readings: pa.Table, offsets: list[int],
                     rejects: pa.Table | None = None) -> tuple[int, set[int]]:
        """One transaction: mark `offsets` processed, store the readings and rejects of the
        offsets not processed before. Returns (rows stored, fresh offsets)."""
        batch = self._prepare(readings)
        if batch.num_rows:
            self._ensure_partitions(batch)
        with self.writing("commit") as conn:
            fresh = {r[0] for r in conn.execute(MARK, (sorted(offsets),))}
            stored = 0
            if batch.num_rows and fresh:
                keep = pc.is_in(batch.column("log_offset"), pa.array(sorted(fresh), pa.int64()))
                stored = self._move(conn, batch.filter(keep))
            if rejects is not None and rejects.num_rows and fresh:
                insert_rejects(conn, rejects, fresh)
            return stored, fresh

    def _prepare(self, readings: pa.Table) -> pa.Table:
        return dedupe_first(conform(readings))

    def _ensure_partitions(self, batch: pa.Table) -> None:
        ts = pc.cast(batch.column("ts"), pa.int64()).to_numpy()
        starts = np.unique(ts // self.partitions.width_us * self.partitions.width_us)
        try:
            with self._write_lock:
                if self._writer is None or self._writer.closed:
                    self._writer = connect(self.settings)
                    self._writer.execute(STAGING)
                    self._writer.commit()
                self.partitions.ensure(self._writer, starts.tolist())
        except TRANSIENT as exc:
            self._drop_writer()
            raise unavailable("partition create", exc) from exc

    def _move(self, conn: psycopg.Connection, batch: pa.Table) -> int:
        if batch.num_rows == 0:
            return 0
        key = [("tenant", "ascending"), ("device_id", "ascending"), ("metric", "ascending")]
        batch = batch.sort_by([*key, ("ts", "ascending")])
        copy_in(conn, "staging", batch.select(
            ["tenant", "device_id", "metric", "ts", "value", "quality", "received_at", "lat",
             "lon", "log_offset"]))
        with conn.cursor() as cur:
            cur.execute(MOVE)
            stored = max(cur.rowcount, 0)
            if stored:
                newest = batch.sort_by([*key, ("ts", "descending")])
                first = _first_per_key(newest)
                cur.execute(UPSERT_LATEST, [newest.column(c).filter(first).to_pylist() for c in
                            ("tenant", "device_id", "metric", "ts", "value", "lat", "lon")])
        return stored

    def replace_span(self, first: int, last: int, readings: pa.Table,
                     device_ids: tuple[str, ...] | None = None,
                     tenant: str | None = None) -> int:
        """Replay: in one transaction delete the rows first stored by offsets first..last
        (of `tenant` and `device_ids`, or all), insert `readings` whose key is absent, and
        recompute `latest` for every (tenant, device, metric) touched. Rows inserted."""
        batch = self._prepare(readings)
        if batch.num_rows:
            self._ensure_partitions(batch)
        where, params = "log_offset BETWEEN %s AND %s", [first, last]
        if device_ids is not None:
            where += " AND device_id = ANY(%s)"
            params.append(list(device_ids))
        if tenant is not None:
            where += " AND tenant = %s"
            params.append(tenant)
        with self.writing("replay") as conn:
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS touched (tenant text, device_id "
                         "text, metric text) ON COMMIT DROP")
            conn.execute(f"INSERT INTO touched SELECT DISTINCT tenant, device_id, metric "
                         f"FROM readings WHERE {where}", params)
            conn.execute(f"DELETE FROM readings WHERE {where}", params)
            keys = batch.select(["tenant", "device_id", "metric"])
            if keys.num_rows:
                conn.execute("INSERT INTO touched SELECT * FROM unnest(%s::text[], %s::text[], "
                             "%s::text[])", [keys.column(c).to_pylist() for c in keys.column_names])
            stored = self._move(conn, batch) if batch.num_rows else 0
            key = ("l.tenant = t.tenant AND l.device_id = t.device_id AND "
                   "l.metric = t.metric")
            conn.execute(f"DELETE FROM latest l USING touched t WHERE {key}")
            conn.execute(
                "INSERT INTO latest SELECT DISTINCT ON (r.tenant, r.device_id, r.metric) "
                "r.tenant, r.device_id, r.metric, r.ts, r.value, r.lat, r.lon FROM readings r "
                "JOIN (SELECT DISTINCT * FROM touched) t ON r.tenant = t.tenant AND "
                "r.device_id = t.device_id AND r.metric = t.metric "
                "ORDER BY r.tenant, r.device_id, r.metric, r.ts DESC")
            return stored

    def window_stats(self, tenant: str, start: datetime, end: datetime,
                     metrics: tuple[str, ...] | None = None,
                     device_ids: tuple[str, ...] | None = None) -> pa.Table:
        """WINDOW_SCHEMA per (device, metric) over start <= ts < end, from `readings`."""
        if device_ids == ():
            return WINDOW_SCHEMA.empty_table()
        text, params = window_sql(tenant, utc(start), utc(end), metrics, device_ids,
                                  "readings", POSTGRES)
        with self._read("window") as conn:
            rows = conn.execute(text, params).fetchall()  # type: ignore[arg-type]
        return pa.Table.from_pylist([dict(zip(WINDOW_SCHEMA.names, r, strict=True))
                                     for r in rows], schema=WINDOW_SCHEMA)

    @contextlib.contextmanager
    def rewrite_guard(self) -> Iterator[None]:
        """Held by a replay window (any process): retention skips its run meanwhile, so it
        cannot drop rows the replay re-inserted before they are in the lake again."""
        key = lock_key(self.settings, REWRITE_LOCK)
        with contextlib.closing(connect(self.settings, autocommit=True)) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (key,))
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))

    def apply_retention(self, now: datetime | None = None,
                        done_offset: int | None = None) -> int:
        """Drop partitions that end before the horizon and whose rows are all at or below
        `done_offset` (already in the lake). Returns the rows dropped."""
        horizon_us = (self.horizon(now) - datetime(1970, 1, 1, tzinfo=UTC)) \
            // timedelta(microseconds=1)
        dropped = 0
        with self.writing("retention") as conn:
            if not conn.execute("SELECT pg_try_advisory_xact_lock(%s)",
                                (lock_key(self.settings, REWRITE_LOCK),)).fetchone()[0]:
                return 0  # a replay is rewriting rows it still has to copy to the lake
            if self.partitions.timescale:
                return self._drop_chunks(conn, horizon_us, done_offset)
            gone = []
            for start, name in sorted(self.partitions.existing(conn).items()):
                if start + self.partitions.width_us > horizon_us:
                    continue
                ident = sql.Identifier(name)
                rows, top = conn.execute(sql.SQL(
                    "SELECT count(*), max(coalesce(log_offset, 0)) FROM {}").format(ident)
                ).fetchone() or (0, None)
                if done_offset is not None and top is not None and top > done_offset:
                    continue
                conn.execute(sql.SQL("DROP TABLE {}").format(ident))
                dropped += int(rows)
                gone.append(start)
        self.partitions.forget(gone)
        return dropped

    def _drop_chunks(self, conn: psycopg.Connection, horizon_us: int,
                     done_offset: int | None) -> int:
        """TimescaleDB: drop the chunks older than the horizon once they are in the lake."""
        boundary = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=horizon_us)
        rows, top = conn.execute("SELECT count(*), max(coalesce(log_offset, 0)) FROM readings "
                                 "WHERE ts < %s", (boundary,)).fetchone() or (0, None)
        if done_offset is not None and top is not None and top > done_offset:
            return 0
        conn.execute("SELECT drop_chunks('readings', older_than => %s::timestamptz)",
                     (boundary,))
        return int(rows)

    # -- reads -------------------------------------------------------------------------------

    def span_readings(self, first: int, last: int) -> pa.Table:
        """READING_SCHEMA rows first stored by log offsets first..last."""
        columns = ", ".join(us_expr(n) if n in ("ts", "received_at") else n
                            for n in READING_SCHEMA.names)
        with self._read("span read") as conn:
            return copy_out(conn, f"SELECT {columns} FROM readings "
                            "WHERE log_offset BETWEEN %s AND %s", (first, last), READING_SCHEMA)

    def readings(self, query: ReadingQuery) -> pa.Table:
        """SERIES_SCHEMA; the part before the horizon is read from the lake with DuckDB."""
        if matches_nothing(query):
            return SERIES_SCHEMA.empty_table()
        horizon = self.horizon()
        files = []
        if self.lake is not None and utc(query.start) < horizon:
            files = self.lake.files("readings", utc(query.start), min(utc(query.end), horizon))
        if not files:
            parts = [Part("readings", utc(query.start), utc(query.end))]
            text, params = series_sql(query, parts, POSTGRES)
            return self._fetch_series(text, params, series_schema(query))
        return self._mixed(query, files, horizon)

    def _fetch_series(self, text: str, params: list[object],
                      schema: pa.Schema = SERIES_SCHEMA) -> pa.Table:
        with self._read("query") as conn:
            rows = conn.execute(text, params).fetchall()  # type: ignore[arg-type]
        return _series_table(rows, schema)

    def _mixed(self, query: ReadingQuery, files: list[str], horizon: datetime) -> pa.Table:
        """Lake files (before the horizon) and hot rows (after it) in one DuckDB query."""
        hot = HOT_ROWS.empty_table()
        if utc(query.end) > horizon:  # every hot row of the range, with its quality: the
            # DuckDB query below applies the quality filters to hot and lake rows alike
            raw = replace(query, start=horizon, every=None, after=None, with_quality=True,
                          exclude_quality=0, require_quality=0)
            text, params = source_sql(raw, [Part("readings", horizon, utc(query.end))], POSTGRES)
            with self._read("query") as conn:
                rows = conn.execute(text, params).fetchall()  # type: ignore[arg-type]
            hot = _series_table(rows, HOT_ROWS)
        cold = read_lake_files(self.lake, files)
        db = duckdb.connect()
        try:
            db.execute("SET TimeZone = 'UTC'")  # hot: rows of query.tenant only (PG filtered)
            db.register("hot_rows", hot.append_column(
                "tenant", pa.array([query.tenant] * hot.num_rows, pa.string())))
            db.register("cold_rows", cold)
            parts = plan_parts(query, "hot_rows", "cold_rows", horizon)
            text, params = series_sql(query, parts, DUCKDB)
            return db.sql(text, params=params).to_arrow_table().cast(series_schema(query))
        finally:
            db.close()

    def latest(self, tenant: str, metrics: tuple[str, ...] | None = None,
               device_ids: tuple[str, ...] | None = None) -> pa.Table:
        if device_ids == ():
            return LATEST_SCHEMA.empty_table()
        text, params = latest_sql(tenant, metrics, device_ids, "latest", POSTGRES)
        with self._read("latest") as conn:
            rows = conn.execute(text, params).fetchall()  # type: ignore[arg-type]
        return pa.Table.from_pylist([dict(zip(LATEST_SCHEMA.names, r, strict=True))
                                     for r in rows], schema=LATEST_SCHEMA)

    def count(self, tenant: str | None = None) -> int:
        with self._read("count") as conn:
            if tenant is None:
                row = conn.execute("SELECT count(*) FROM readings").fetchone()
            else:
                row = conn.execute("SELECT count(*) FROM readings WHERE tenant = %s",
                                   (tenant,)).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        with self._write_lock:
            self._drop_writer()
        self.pool.close()


def _first_per_key(table: pa.Table) -> pa.Array:
    """True on the first row of every (tenant, device_id, metric) run of a sorted table."""
    keys = pc.binary_join_element_wise(table.column("tenant"), table.column("device_id"),
                                       table.column("metric"), "\x00").combine_chunks()
    if len(keys) <= 1:
        return pa.array([True] * len(keys))
    changed = pc.not_equal(keys.slice(1), keys.slice(0, len(keys) - 1))
    return pa.concat_arrays([pa.array([True]), changed])


def read_lake_files(lake: Lake | None, files: list[str]) -> pa.Table:
    """READING_SCHEMA rows of lake files (the S3 lake reads its objects; a local lake, its
    files)."""
    reader = getattr(lake, "read_files", None)
    if reader is not None:
        return reader(files)
    return pa.concat_tables([pq.read_table(f).select(READING_SCHEMA.names).cast(READING_SCHEMA)
                             for f in files])


HOT_ROWS = pa.schema([*SERIES_SCHEMA.remove(SERIES_SCHEMA.get_field_index("count")),
                      pa.field("quality", pa.int16())])
"""Raw hot rows with their quality, as `_mixed` hands them to DuckDB."""


def _series_table(rows: list[tuple[object, ...]], schema: pa.Schema = SERIES_SCHEMA) -> pa.Table:
    names = schema.names
    return pa.Table.from_pylist([dict(zip(names, r, strict=True)) for r in rows],
                                schema=schema)
