"""The catalog: one SQLite file for the device registry and credentials.

It is separate from the hot store so that CLI commands (`devices add`, `tokens create`) work
while `sensorlake up` is running: SQLite in WAL mode lets several processes share it.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

MIGRATIONS: list[str] = [
    """
    CREATE TABLE devices (
        tenant TEXT NOT NULL,
        id TEXT NOT NULL,
        type TEXT NOT NULL DEFAULT 'generic',
        name TEXT NOT NULL DEFAULT '',
        lat REAL, lon REAL, alt REAL,
        tags TEXT NOT NULL DEFAULT '{}',
        calibration TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (tenant, id)
    );
    CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        hash TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL,
        tenant TEXT NOT NULL,
        device_id TEXT,
        label TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        expires_at TEXT,
        revoked_at TEXT,
        last_used_at TEXT
    );
    CREATE TABLE changes (n INTEGER NOT NULL);
    INSERT INTO changes VALUES (0);
    """,
    # 2: tenancy, users, scoped tokens, Cedar grants, the audit log (issue 6).
    """
    ALTER TABLE devices ADD COLUMN uid TEXT;
    ALTER TABLE devices ADD COLUMN public INTEGER NOT NULL DEFAULT 0;
    UPDATE devices SET uid = lower(hex(randomblob(12))) WHERE uid IS NULL;
    CREATE UNIQUE INDEX devices_uid ON devices (uid);
    CREATE TRIGGER devices_new_uid AFTER INSERT ON devices WHEN NEW.uid IS NULL BEGIN
        UPDATE devices SET uid = lower(hex(randomblob(12))) WHERE rowid = NEW.rowid;
    END;
    CREATE TABLE tenants (
        id TEXT PRIMARY KEY,
        uid TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL
    );
    CREATE TABLE users (
        uid TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        name TEXT NOT NULL,
        role TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        window_start INTEGER NOT NULL DEFAULT 0,
        window_end INTEGER NOT NULL DEFAULT 1440,
        created_at TEXT NOT NULL,
        disabled_at TEXT,
        UNIQUE (tenant, name)
    );
    ALTER TABLE tokens ADD COLUMN kind TEXT NOT NULL DEFAULT 'api';
    ALTER TABLE tokens ADD COLUMN scopes TEXT;
    ALTER TABLE tokens ADD COLUMN user_uid TEXT;
    ALTER TABLE tokens ADD COLUMN rate_per_minute INTEGER;
    CREATE TABLE grants (
        id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        template TEXT NOT NULL,
        user_uid TEXT NOT NULL,
        resource_type TEXT NOT NULL,
        resource_uid TEXT NOT NULL,
        created_at TEXT NOT NULL,
        created_by TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE audit (
        n INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        tenant TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX audit_tenant ON audit (tenant, n);
    """,
]
"""Numbered schema migrations; the catalog's user_version says how many ran."""


class Catalog:
    """A thread-safe handle on catalog.db (one connection, serialized)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                     timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._migrate()

    def _migrate(self) -> None:
        with self._lock:
            done = self._conn.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(MIGRATIONS[done:], start=done + 1):
                self._conn.executescript(
                    f"BEGIN;\n{script}\nPRAGMA user_version={number};\nCOMMIT;")

    def execute(self, sql: str, params: tuple | dict = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def write(self, statements: list[tuple[str, tuple | dict]], bump: bool = True) -> None:
        """Run statements in one transaction; `bump` moves the change counter so that
        other processes refresh their caches."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    self._conn.execute(sql, params)
                if bump:
                    self._conn.execute("UPDATE changes SET n = n + 1")
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def change_number(self) -> int:
        """Grows on every write, from any process: readers refresh their caches when it moves."""
        return int(self.execute("SELECT n FROM changes")[0][0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()
