"""ops.db: job runs, the scheduler's heartbeat, alert states and events, disk samples.

One SQLite file in the data folder (WAL), shared by every process on it: `sensorlake up`
writes runs and alert states; the CLI reads progress, queues runs for a running scheduler
and reads history while it runs. Each call opens no transaction longer than one statement
group, so a reader never waits long.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, job TEXT NOT NULL, params TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL, trigger TEXT NOT NULL, requested_at REAL NOT NULL,
    started_at REAL, updated_at REAL, finished_at REAL, done REAL, total REAL,
    rows_done INTEGER NOT NULL DEFAULT 0, rows_rejected INTEGER NOT NULL DEFAULT 0,
    message TEXT, result TEXT, error TEXT, pid INTEGER);
CREATE INDEX IF NOT EXISTS runs_job ON runs (job, id);
CREATE INDEX IF NOT EXISTS runs_status ON runs (status);
CREATE TABLE IF NOT EXISTS heartbeats (
    name TEXT PRIMARY KEY, pid INTEGER NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS alert_states (
    rule TEXT NOT NULL, tenant TEXT NOT NULL, subject TEXT NOT NULL, state TEXT NOT NULL,
    since REAL NOT NULL, value REAL, message TEXT, updated_at REAL NOT NULL,
    PRIMARY KEY (rule, tenant, subject));
CREATE TABLE IF NOT EXISTS alert_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, rule TEXT NOT NULL, tenant TEXT NOT NULL,
    subject TEXT NOT NULL, state TEXT NOT NULL, at REAL NOT NULL, value REAL, message TEXT,
    deliveries TEXT NOT NULL DEFAULT '{}', attempts INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS disk_samples (at REAL PRIMARY KEY, free_bytes INTEGER NOT NULL,
    total_bytes INTEGER NOT NULL);
"""

RUN_COLUMNS = ("id", "job", "params", "status", "trigger", "requested_at", "started_at",
               "updated_at", "finished_at", "done", "total", "rows_done", "rows_rejected",
               "message", "result", "error", "pid")
FINISHED = ("succeeded", "failed", "cancelled")


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OpsDB:
    """A thread-safe handle on ops.db (one connection, serialized by a lock)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                   timeout=30)
        self._db.execute("PRAGMA busy_timeout = 30000")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.executescript(SCHEMA)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def transaction(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    self._db.execute(sql, params)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    # -- runs --------------------------------------------------------------------------------

    def create_run(self, job: str, params: dict[str, Any], trigger: str,
                   status: str = "queued") -> int:
        now = time.time()
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO runs (job, params, status, trigger, requested_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (job, orjson.dumps(params).decode(), status, trigger, now, now))
            return int(cur.lastrowid or 0)

    def claim_queued(self) -> dict[str, Any] | None:
        """Take the oldest queued run (marks it running by this process), if any."""
        with self._lock:
            row = self._db.execute("SELECT id FROM runs WHERE status = 'queued' "
                                   "ORDER BY id LIMIT 1").fetchone()
            if row is None:
                return None
            now = time.time()
            cur = self._db.execute(
                "UPDATE runs SET status = 'running', started_at = ?, updated_at = ?, pid = ? "
                "WHERE id = ? AND status = 'queued'", (now, now, os.getpid(), row[0]))
            return self.run(row[0]) if cur.rowcount else None

    def start_run(self, run_id: int) -> None:
        now = time.time()
        self.execute("UPDATE runs SET status = 'running', started_at = ?, updated_at = ?, "
                     "pid = ? WHERE id = ?", (now, now, os.getpid(), run_id))

    def progress(self, run_id: int, **fields: Any) -> None:
        names = [k for k in fields if k in ("done", "total", "rows_done", "rows_rejected",
                                            "message")]
        if not names:
            return
        sets = ", ".join(f"{k} = ?" for k in names)
        self.execute(f"UPDATE runs SET {sets}, updated_at = ? WHERE id = ?",
                     [*(fields[k] for k in names), time.time(), run_id])

    def finish_run(self, run_id: int, status: str, result: dict[str, Any] | None = None,
                   error: str | None = None) -> None:
        now = time.time()
        self.execute("UPDATE runs SET status = ?, finished_at = ?, updated_at = ?, result = ?, "
                     "error = ? WHERE id = ?",
                     (status, now, now, orjson.dumps(result).decode() if result is not None
                      else None, error, run_id))

    def run(self, run_id: int) -> dict[str, Any] | None:
        rows = self.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE id = ?",
                            (run_id,))
        return _run_dict(rows[0]) if rows else None

    def runs(self, job: str | None = None, limit: int = 20,
             statuses: Sequence[str] | None = None) -> list[dict[str, Any]]:
        where, params = [], []
        if job:
            where.append("job = ?")
            params.append(job)
        if statuses:
            where.append(f"status IN ({', '.join('?' for _ in statuses)})")
            params.extend(statuses)
        sql = f"SELECT {', '.join(RUN_COLUMNS)} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self.execute(sql + " ORDER BY id DESC LIMIT ?", [*params, limit])
        return [_run_dict(r) for r in rows]

    def last_start(self, job: str) -> float | None:
        rows = self.execute("SELECT max(coalesce(started_at, requested_at)) FROM runs "
                            "WHERE job = ? AND trigger = 'schedule'", (job,))
        return rows[0][0] if rows and rows[0][0] is not None else None

    def last_finished(self, job: str) -> dict[str, Any] | None:
        rows = self.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE job = ? AND "
                            "status IN ('succeeded', 'failed') ORDER BY id DESC LIMIT 1",
                            (job,))
        return _run_dict(rows[0]) if rows else None

    def fail_orphans(self) -> int:
        """Mark runs whose process is gone (kill -9, power cut) as failed."""
        orphans = [rid for rid, pid in self.execute(
            "SELECT id, pid FROM runs WHERE status = 'running'") if not pid_alive(pid)]
        for rid in orphans:
            self.finish_run(rid, "failed", error="interrupted: the process running it ended "
                            "(crash, kill or power cut); run it again with `sensorlake jobs "
                            "run`")
        return len(orphans)

    def prune(self, keep_days: float = 14) -> int:
        """Forget finished runs and alert events older than `keep_days`; rows deleted."""
        cutoff = time.time() - keep_days * 86400
        with self._lock:
            runs = self._db.execute("DELETE FROM runs WHERE status IN ('succeeded', 'failed', "
                                    "'cancelled') AND finished_at < ?", (cutoff,)).rowcount
            events = self._db.execute("DELETE FROM alert_events WHERE at < ? AND attempts "
                                      ">= 5", (cutoff,)).rowcount
        return runs + events

    # -- heartbeats --------------------------------------------------------------------------

    def beat(self, name: str) -> None:
        self.execute("INSERT INTO heartbeats VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE "
                     "SET pid = excluded.pid, at = excluded.at", (name, os.getpid(), time.time()))

    def alive(self, name: str, max_age: float = 15.0) -> bool:
        rows = self.execute("SELECT pid, at FROM heartbeats WHERE name = ?", (name,))
        return bool(rows) and time.time() - rows[0][1] <= max_age and pid_alive(rows[0][0])

    def clear_beat(self, name: str) -> None:
        self.execute("DELETE FROM heartbeats WHERE name = ? AND pid = ?", (name, os.getpid()))

    # -- disk samples ------------------------------------------------------------------------

    def add_disk_sample(self, free_bytes: int, total_bytes: int, keep_seconds: float) -> None:
        now = time.time()
        self.transaction([
            ("INSERT OR REPLACE INTO disk_samples VALUES (?, ?, ?)", (now, free_bytes,
                                                                    total_bytes)),
            ("DELETE FROM disk_samples WHERE at < ?", (now - keep_seconds,)),
        ])

    def disk_samples(self, since: float) -> list[tuple[float, int]]:
        return [(a, f) for a, f in self.execute(
            "SELECT at, free_bytes FROM disk_samples WHERE at >= ? ORDER BY at", (since,))]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _run_dict(row: tuple) -> dict[str, Any]:
    out = dict(zip(RUN_COLUMNS, row, strict=True))
    out["params"] = orjson.loads(out["params"] or "{}")
    out["result"] = orjson.loads(out["result"]) if out["result"] else None
    return out
