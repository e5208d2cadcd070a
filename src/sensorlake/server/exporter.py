"""The lake exporter: one writer of the lake for all server workers, elected in PostgreSQL.

Every worker process runs an exporter thread; the one that holds the session advisory lock
exports, the others wait (if its process dies, PostgreSQL drops the session and the lock,
and another takes over within a few seconds). State lives in the `lake_export` row, next
to the readings, with the same durability:

    exported            every offset <= exported is in the lake
    claim_first..last   the span being written now (survives a crash of the exporter)

A leader whose session sits idle for STALE_SECONDS (its client vanished behind a network
cut, or its process is paused) is ended by the next candidate, which takes over; a paused
leader that resumes finds its connection gone and stands down.

One step: resume the claimed span, or claim the next one - from exported + 1 up to the last
offset of the unbroken run of `processed` marks above it (every message in it committed by
some worker, in any order) - then write `raw/` from the log and `readings/` from
`span_readings` (the rows those offsets first stored), each file named by the span and
created only if absent, then in one transaction move `exported`, clear the claim and drop
the marks it covers; finally acknowledge the span in the log (`lake` consumer) so JetStream
can purge it after log.keep_acked_seconds. A crash anywhere in between resumes the same span
and so produces the same files with the same rows: no loss, no duplicate.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg

from sensorlake.config import PostgresSettings, Settings
from sensorlake.errors import SensorlakeError, TransientError
from sensorlake.log.base import Log, Span
from sensorlake.server.lease import STALE_SECONDS, evict_stale_holder, lock_key, try_lock
from sensorlake.store.base import Lake
from sensorlake.store.pg_schema import TRANSIENT, connect, unavailable
from sensorlake.store.postgres import PostgresStore

log = logging.getLogger(__name__)

LAKE_CONSUMER = "lake"
MAX_SPAN = 1_000_000
"""Most offsets exported as one span."""

FRONTIER = """
SELECT max(log_offset) FROM (
    SELECT log_offset, log_offset - row_number() OVER (ORDER BY log_offset) AS run
    FROM (SELECT log_offset FROM processed WHERE log_offset > %(after)s
          ORDER BY log_offset LIMIT %(limit)s) AS next) AS runs
WHERE run = %(after)s
"""


@dataclass
class ExportStats:
    spans: int = 0
    rows: int = 0
    exported: int = 0
    last_export: datetime | None = None
    leader: bool = False


def exported_offset(settings: PostgresSettings) -> int:
    """Every log offset at or below this is in the lake (the `lake_export` row)."""
    with contextlib.closing(connect(settings, autocommit=True)) as conn:
        row = conn.execute("SELECT exported FROM lake_export WHERE id = 1").fetchone()
    return int(row[0])


class LakeExporter:
    """Writes the lake from PostgreSQL when this process holds the exporter lock."""

    def __init__(self, settings: Settings, log_: Log, hot: PostgresStore, lake: Lake) -> None:
        self.settings, self.log, self.hot, self.lake = settings, log_, hot, lake
        self.stats = ExportStats()
        self._key = lock_key(settings.postgres, "lake")
        self._conn: psycopg.Connection | None = None
        self._last = time.monotonic()

    def _leader(self) -> psycopg.Connection | None:
        """Our lock-holding connection, or None when another process exports."""
        if self._conn is not None and not self._conn.closed:
            return self._conn
        self._conn = None
        self.stats.leader = False
        conn = connect(self.settings.postgres, autocommit=True)
        if self._try_lock(conn) or (self._evict_stale_holder(conn) and self._try_lock(conn)):
            self._conn, self.stats.leader = conn, True
            log.info("lake exporter: this process exports the lake")
            return conn
        conn.close()
        return None

    def _try_lock(self, conn: psycopg.Connection) -> bool:
        return try_lock(conn, self._key)

    def _evict_stale_holder(self, conn: psycopg.Connection) -> bool:
        """End the session holding the lock if it has been idle for STALE_SECONDS: a live
        leader queries every half second, so that session's client is gone (a network cut
        the server did not notice, or a paused process). Returns whether one was ended."""
        return evict_stale_holder(conn, self._key, "lake exporter", STALE_SECONDS)

    def step(self, force: bool = False) -> Span | None:
        """Export one span if this process leads and one is due; returns it."""
        try:
            conn = self._leader()
            if conn is None:
                return None
            exported, first, last = conn.execute(
                "SELECT exported, claim_first, claim_last FROM lake_export WHERE id = 1"
            ).fetchone()
            if first is not None:
                span = Span(first, last)
                log.info("lake exporter: resuming claimed span %s..%s", first, last)
            else:
                due = self.settings.worker.lake_flush_seconds
                if not force and time.monotonic() - self._last < due:
                    return None
                top = conn.execute(FRONTIER, {"after": exported, "limit": MAX_SPAN}).fetchone()[0]
                if top is None:
                    self._last = time.monotonic()
                    return None
                span = Span(exported + 1, top)
                conn.execute("UPDATE lake_export SET claim_first = %s, claim_last = %s, "
                             "updated_at = now() WHERE id = 1", (span.first, span.last))
            with self._heartbeat(conn):
                self._write(span)
            with conn.transaction():
                conn.execute("UPDATE lake_export SET exported = %s, claim_first = NULL, "
                             "claim_last = NULL, updated_at = now() WHERE id = 1", (span.last,))
                conn.execute("DELETE FROM processed WHERE log_offset <= %s", (span.last,))
        except TRANSIENT as exc:
            self._drop()
            raise unavailable("lake export", exc) from exc
        self._last = time.monotonic()
        self.stats.spans += 1
        self.stats.exported = span.last
        self.stats.last_export = datetime.now(UTC)
        with contextlib.suppress(TransientError):  # only lets the log purge sooner
            self.log.ack(LAKE_CONSUMER, span)
        return span

    @contextlib.contextmanager
    def _heartbeat(self, conn: psycopg.Connection) -> Iterator[None]:
        """Keep the lock session visibly active while files are written (else a candidate
        would take it for a stale one after STALE_SECONDS)."""
        done = threading.Event()

        def beat() -> None:
            while not done.wait(STALE_SECONDS / 6):
                with contextlib.suppress(Exception):
                    conn.execute("SELECT 1")

        thread = threading.Thread(target=beat, name="exporter-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    def _write(self, span: Span) -> None:
        raw = self.log.read_span(span).table
        self.lake.write_span("raw", span, raw)
        readings = self.hot.span_readings(span.first, span.last)
        if readings.num_rows:
            self.lake.write_span("readings", span, readings)
        self.stats.rows += readings.num_rows

    def exported(self) -> int:
        return exported_offset(self.settings.postgres)

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None
        self.stats.leader = False

    def run(self, stop: threading.Event) -> None:
        """Until `stop`: export when due; on stop, export what is complete, then release."""
        backoff = 1.0
        while not stop.wait(0.5):
            try:
                while self.step() is not None and not stop.is_set():
                    pass
                backoff = 1.0
            except Exception as exc:
                log.warning("lake exporter: %s (will retry)", exc)
                stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
        with contextlib.suppress(SensorlakeError, *TRANSIENT):
            self.step(force=True)
        self._drop()
