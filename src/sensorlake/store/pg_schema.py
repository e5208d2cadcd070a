"""PostgreSQL schema: numbered migrations, connections, and time partitions of `readings`.

Migrations run in order, each in its own transaction, under an advisory lock so that several
processes starting at once apply each one exactly once; `schema_migrations` records them.
`readings` is range-partitioned by `ts` (native partitioning, `postgres.partition_days` per
partition, aligned to the Unix epoch); partitions are created on demand before a write that
needs them. With the TimescaleDB extension installed in the database, `readings` becomes a
hypertable instead (same columns, chunks of the same width).
"""

from __future__ import annotations

import contextlib
import re
import threading
import zlib
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from sensorlake.config import PostgresSettings
from sensorlake.errors import ConfigError, SinkUnavailable

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAY_US = 86_400_000_000
IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

READINGS_COLUMNS = """
    tenant text COLLATE "C" NOT NULL, device_id text COLLATE "C" NOT NULL,
    metric text COLLATE "C" NOT NULL,
    ts timestamptz NOT NULL, value double precision NOT NULL, quality smallint NOT NULL,
    received_at timestamptz NOT NULL, lat double precision, lon double precision,
    log_offset bigint, PRIMARY KEY (tenant, device_id, metric, ts)"""

MIGRATIONS: list[str] = [
    # 1: readings (partitioned), latest, quarantine, processed offsets, lake export state
    f"""
    CREATE TABLE readings ({READINGS_COLUMNS}) {{partitioning}};
    CREATE INDEX readings_log_offset ON readings USING brin (log_offset);
    CREATE TABLE latest (
        tenant text COLLATE "C" NOT NULL, device_id text COLLATE "C" NOT NULL,
        metric text COLLATE "C" NOT NULL,
        ts timestamptz NOT NULL, value double precision NOT NULL,
        lat double precision, lon double precision, PRIMARY KEY (tenant, device_id, metric));
    CREATE TABLE quarantine (
        id bigserial PRIMARY KEY, msg_id text NOT NULL, tenant text NOT NULL,
        device_id text NOT NULL, stage text NOT NULL, field text NOT NULL DEFAULT '',
        value text, reason text NOT NULL, source text, received_at timestamptz, payload bytea,
        quarantined_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        UNIQUE (msg_id, stage, field, reason));
    CREATE INDEX quarantine_tenant_time ON quarantine (tenant, quarantined_at);
    CREATE TABLE processed (log_offset bigint PRIMARY KEY);
    CREATE TABLE lake_export (
        id int PRIMARY KEY CHECK (id = 1), exported bigint NOT NULL DEFAULT 0,
        claim_first bigint, claim_last bigint, updated_at timestamptz);
    INSERT INTO lake_export (id) VALUES (1);
    """,
]
"""Numbered schema migrations (append only; never edit one that shipped)."""

TRANSIENT = (psycopg.OperationalError, psycopg.InterfaceError,
             psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure,
             psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled)
"""Errors after which the same statement may succeed later (connection lost, deadlock)."""


def check_identifier(name: str) -> str:
    if not IDENTIFIER.match(name):
        raise ConfigError(f"postgres.schema_name {name!r} is not a plain lower-case SQL name "
                          "(letters, digits, _; at most 63): pick another")
    return name


def lock_key(settings: PostgresSettings, name: str) -> int:
    """The advisory lock key of `name` ("lake", "scheduler", "hot-rewrite") in this schema."""
    return zlib.crc32(f"sensorlake-{name}-{settings.schema_name}".encode())


def connect(settings: PostgresSettings, autocommit: bool = False) -> psycopg.Connection:
    """A connection whose search_path is the sensorlake schema; SinkUnavailable if down."""
    schema = check_identifier(settings.schema_name)
    timeout = max(1, round(settings.connect_timeout_seconds))
    try:
        conn = psycopg.connect(
            settings.dsn.get_secret_value(), autocommit=True, connect_timeout=timeout,
            keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=3,
            tcp_user_timeout=timeout * 3000, application_name="sensorlake")
    except psycopg.Error as exc:
        raise SinkUnavailable(f"PostgreSQL is unreachable ({_short(exc)}); check postgres.dsn "
                              "and that the server runs - will retry") from exc
    try:
        create_schema(conn, schema)
        configure(conn, schema)
    except psycopg.OperationalError as exc:  # the server went away right after connecting
        conn.close()
        raise SinkUnavailable(f"PostgreSQL is unreachable ({_short(exc)}); check postgres.dsn "
                              "and that the server runs - will retry") from exc
    conn.autocommit = autocommit
    return conn


def create_schema(conn: psycopg.Connection, schema: str) -> None:
    """CREATE SCHEMA IF NOT EXISTS, safe when several processes start at once (PostgreSQL's
    IF NOT EXISTS still raises a unique violation for the one that loses the race)."""
    # the loser of the race finds the schema created by the other process: what it wanted
    with contextlib.suppress(psycopg.errors.UniqueViolation, psycopg.errors.DuplicateSchema):
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))


SESSION = ("SET TimeZone TO 'UTC'", "SET idle_in_transaction_session_timeout = '10s'",
           "SET lock_timeout = '10s'", "SET tcp_keepalives_idle = 5",
           "SET tcp_keepalives_interval = 2", "SET tcp_keepalives_count = 3")
"""A worker's transaction is never idle for long (it copies, inserts and commits at once), so
one whose client vanished without closing (a network cut) is ended by the server after 10 s,
and its row locks stop blocking the other workers; the server's own keepalive probes end
sessions whose peer is gone. A worker waiting on a lock gives up after 10 s and retries
(LockNotAvailable is transient)."""


def configure(conn: psycopg.Connection, schema: str) -> None:
    """search_path, UTC and the session timeouts above (autocommit connection)."""
    conn.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(schema)))
    for statement in SESSION:
        conn.execute(statement)  # type: ignore[arg-type]


def _short(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def unavailable(what: str, exc: BaseException) -> SinkUnavailable:
    err = SinkUnavailable(f"PostgreSQL {what} failed ({_short(exc)}); will retry")
    err.__cause__ = exc
    return err


def has_timescale(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    return row is not None


def migrate(conn: psycopg.Connection, partition_days: int) -> int:
    """Apply the migrations not yet applied (autocommit connection); returns how many."""
    key = zlib.crc32(f"sensorlake-migrate-{conn.execute('SHOW search_path').fetchone()[0]}"
                     .encode())
    timescale = has_timescale(conn)
    done = 0
    conn.execute("SELECT pg_advisory_lock(%s)", (key,))
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                     "version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
        applied = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
        for number, script in enumerate(MIGRATIONS, start=1):
            if number in applied:
                continue
            partitioning = "" if timescale else "PARTITION BY RANGE (ts)"
            with conn.transaction():
                conn.execute(script.replace("{partitioning}", partitioning))  # type: ignore[arg-type]
                if number == 1 and timescale:
                    conn.execute("SELECT create_hypertable('readings', 'ts', chunk_time_interval"
                                 " => %s::interval)", (f"{partition_days} days",))
                conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (number,))
            done += 1
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
    return done


class Partitions:
    """Creates and lists the daily (or N-day) partitions of `readings`."""

    def __init__(self, partition_days: int, timescale: bool) -> None:
        self.width_us = partition_days * DAY_US
        self.timescale = timescale
        self._known: set[int] = set()
        self._lock = threading.Lock()

    def start_of(self, ts_us: int) -> int:
        return ts_us // self.width_us * self.width_us

    def name(self, start_us: int) -> str:
        return f"readings_p{EPOCH + timedelta(microseconds=start_us):%Y%m%d}"

    def ensure(self, conn: psycopg.Connection, starts: Iterable[int]) -> None:
        """Create the partitions starting at `starts` that do not exist (own transaction)."""
        if self.timescale:
            return
        with self._lock:
            missing = sorted(set(starts) - self._known)
        if not missing:
            return
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (zlib.crc32(b"sensorlake-part"),))
            existing = self.existing(conn)
            for start in missing:
                if start in existing:
                    continue
                lo = EPOCH + timedelta(microseconds=start)
                hi = lo + timedelta(microseconds=self.width_us)
                conn.execute(sql.SQL("CREATE TABLE {} PARTITION OF readings FOR VALUES FROM "
                                     "({}) TO ({})").format(sql.Identifier(self.name(start)),
                                                            sql.Literal(lo), sql.Literal(hi)))
                existing[start] = self.name(start)
        with self._lock:
            self._known |= set(existing)

    def existing(self, conn: psycopg.Connection) -> dict[int, str]:
        """start µs -> partition name, read from the catalog."""
        rows = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'readings'::regclass").fetchall()
        out: dict[int, str] = {}
        for (name,) in rows:
            day = datetime.strptime(name.removeprefix("readings_p"), "%Y%m%d").replace(tzinfo=UTC)
            out[(day - EPOCH) // timedelta(microseconds=1)] = name
        return out

    def forget(self, starts: Iterable[int]) -> None:
        with self._lock:
            self._known -= set(starts)


def fetch_one(conn: psycopg.Connection, query: Any, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]
