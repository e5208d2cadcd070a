"""One holder per deployment: PostgreSQL session advisory locks (lake exporter, scheduler).

The lock lives as long as the session that took it: a process that dies (kill -9, power
cut) loses it with its connection, and the next candidate takes over. A holder queries at
least every few seconds; a candidate that finds the lock held by a session idle for
STALE_SECONDS ends that session (a network cut PostgreSQL did not notice, a paused
process) and takes the lock.
"""

from __future__ import annotations

import contextlib
import logging

import psycopg

from sensorlake.config import PostgresSettings
from sensorlake.store.pg_schema import connect, lock_key

__all__ = ["PgLease", "evict_stale_holder", "held_by_anyone", "lock_key", "try_lock"]

log = logging.getLogger(__name__)

STALE_SECONDS = 30

HOLDER = (
    "SELECT a.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = %s "
    "AND l.objsubid = 1 AND l.database = (SELECT oid FROM pg_database WHERE datname = "
    "current_database())")


def try_lock(conn: psycopg.Connection, key: int) -> bool:
    return bool(conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0])


def evict_stale_holder(conn: psycopg.Connection, key: int, what: str,
                       stale_seconds: float = STALE_SECONDS) -> bool:
    """End the session holding `key` if it has been idle for `stale_seconds`; returns
    whether one was ended."""
    row = conn.execute(HOLDER + " AND a.state = 'idle' AND a.state_change < now() - "
                       "make_interval(secs => %s)", (key, stale_seconds)).fetchone()
    if row is None:
        return False
    log.warning("%s: the session %s holding the lock has been idle for over %s s; ending it "
                "and taking over", what, row[0], stale_seconds)
    return bool(conn.execute("SELECT pg_terminate_backend(%s)", (row[0],)).fetchone()[0])


def held_by_anyone(settings: PostgresSettings, name: str) -> bool:
    """Whether some session holds the lock `name` now."""
    with contextlib.closing(connect(settings, autocommit=True)) as conn:
        return conn.execute(HOLDER, (lock_key(settings, name),)).fetchone() is not None


class PgLease:
    """`held()`: whether this process holds the lock `name`, taking it when it is free.
    Call it at least every few seconds (each call keeps the session visibly active)."""

    def __init__(self, settings: PostgresSettings, name: str) -> None:
        self.settings, self.name = settings, name
        self.key = lock_key(settings, name)
        self._conn: psycopg.Connection | None = None

    def held(self) -> bool:
        if self._conn is not None:
            try:
                self._conn.execute("SELECT 1")
                return True
            except psycopg.Error:
                log.warning("%s: lost the connection holding the lock; trying again", self.name)
                self.release()
        try:
            conn = connect(self.settings, autocommit=True)
        except Exception as exc:  # PostgreSQL unreachable: not the holder for now
            log.debug("%s: cannot reach PostgreSQL for the lock: %s", self.name, exc)
            return False
        try:
            if try_lock(conn, self.key) or (evict_stale_holder(conn, self.key, self.name)
                                            and try_lock(conn, self.key)):
                self._conn = conn
                log.info("%s: this process holds the lock", self.name)
                return True
        except psycopg.Error as exc:
            log.debug("%s: lock attempt failed: %s", self.name, exc)
        conn.close()
        return False

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None
