"""The quarantine: rejected input with its reason and raw bytes, in its own SQLite file.

WAL mode, so other processes (CLI, API) read while the worker writes; synchronous=FULL,
because the worker acknowledges the log only after the quarantine committed. A NULL `field`
is stored as '' so that UNIQUE(msg_id, stage, field, reason) makes rewrites no-ops.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from sensorlake.errors import SinkUnavailable
from sensorlake.store.base import QUARANTINE_SCHEMA
from sensorlake.store.memory import QUARANTINE_LIST_SCHEMA
from sensorlake.store.query import utc

COLUMNS = QUARANTINE_SCHEMA.names
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY,
    msg_id TEXT NOT NULL, tenant TEXT NOT NULL, device_id TEXT NOT NULL,
    stage TEXT NOT NULL, field TEXT NOT NULL DEFAULT '', value TEXT, reason TEXT NOT NULL,
    source TEXT, received_at INTEGER, payload BLOB,
    quarantined_at INTEGER NOT NULL,
    UNIQUE (msg_id, stage, field, reason)
);
CREATE INDEX IF NOT EXISTS quarantine_tenant_time ON quarantine (tenant, quarantined_at);
CREATE INDEX IF NOT EXISTS quarantine_time ON quarantine (quarantined_at);
"""


def _us(at: datetime | None) -> int | None:
    return None if at is None else (utc(at) - EPOCH) // timedelta(microseconds=1)


class SQLiteQuarantine:
    """Quarantine in SQLite; one connection guarded by a lock (callers may be threads)."""

    def __init__(self, path: Path, busy_timeout_ms: int = 10_000) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                   timeout=busy_timeout_ms / 1000)
        self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = FULL")
        self._db.executescript(SCHEMA_SQL)

    def write(self, rejects: pa.Table) -> int:
        """Insert QUARANTINE_SCHEMA rows not yet present; returns rows newly stored."""
        if rejects.num_rows == 0:
            return 0
        table = rejects.select(COLUMNS).cast(QUARANTINE_SCHEMA)
        now = _us(datetime.now(UTC))
        cols = table.to_pydict()
        rows = [
            (cols["msg_id"][i], cols["tenant"][i], cols["device_id"][i], cols["stage"][i],
             cols["field"][i] or "", cols["value"][i], cols["reason"][i], cols["source"][i],
             _us(cols["received_at"][i]), cols["payload"][i], now)
            for i in range(table.num_rows)
        ]
        sql = ("INSERT OR IGNORE INTO quarantine (msg_id, tenant, device_id, stage, field, "
               "value, reason, source, received_at, payload, quarantined_at) "
               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
        with self._lock:
            try:
                before = self._db.total_changes
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(sql, rows)
                self._db.execute("COMMIT")
                return self._db.total_changes - before
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise SinkUnavailable(f"quarantine {self.path}: write failed: {exc}") from exc

    def _where(self, tenant: str | None, since: datetime | None) -> tuple[str, list[object]]:
        where, params = [], []
        if tenant is not None:
            where.append("tenant = ?")
            params.append(tenant)
        if since is not None:
            where.append("quarantined_at >= ?")
            params.append(_us(since))
        return (" WHERE " + " AND ".join(where)) if where else "", params

    def list(self, tenant: str | None = None, limit: int = 100,
             since: datetime | None = None) -> pa.Table:
        """Newest first; QUARANTINE_SCHEMA plus `quarantined_at`."""
        where, params = self._where(tenant, since)
        sql = (f"SELECT {', '.join(COLUMNS)}, quarantined_at FROM quarantine{where} "
               "ORDER BY quarantined_at DESC, id DESC LIMIT ?")
        with self._lock:
            rows = self._db.execute(sql, [*params, max(int(limit), 0)]).fetchall()
        names = [*COLUMNS, "quarantined_at"]
        data: dict[str, list[object]] = {n: [r[i] for r in rows] for i, n in enumerate(names)}
        data["field"] = [f or None for f in data["field"]]
        arrays = [
            pa.array(data[f.name], pa.int64()).cast(f.type)
            if pa.types.is_timestamp(f.type) else pa.array(data[f.name], f.type)
            for f in QUARANTINE_LIST_SCHEMA
        ]
        return pa.Table.from_arrays(arrays, schema=QUARANTINE_LIST_SCHEMA)

    def count(self, tenant: str | None = None) -> int:
        where, params = self._where(tenant, None)
        with self._lock:
            return int(self._db.execute(f"SELECT count(*) FROM quarantine{where}",
                                        params).fetchone()[0])

    def reasons(self, tenant: str | None = None, limit: int = 10) -> list[tuple[str, int]]:
        """The most frequent reasons with their counts, most frequent first."""
        where, params = self._where(tenant, None)
        sql = (f"SELECT reason, count(*) AS n FROM quarantine{where} "
               "GROUP BY reason ORDER BY n DESC, reason LIMIT ?")
        with self._lock:
            rows = self._db.execute(sql, [*params, max(int(limit), 0)]).fetchall()
        return [(str(r), int(n)) for r, n in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
