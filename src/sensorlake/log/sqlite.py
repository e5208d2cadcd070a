"""SQLiteLog: the embedded durable log, one SQLite file in WAL mode with group commit.

A single writer thread owns the write connection. `submit` queues a request; the writer takes
everything queued (up to group_commit_max envelopes), writes it in one transaction with
synchronous=FULL and resolves the futures only after COMMIT returned. Claims, acks, replays
and prunes go through the same thread. Readers use one connection per thread (WAL: they never
block the writer). Offsets, sizes, consumers and watermarks are cached in memory; the cache
changes only after a commit succeeded. One process (and one SQLiteLog) per file: a lock file
next to it enforces that.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sensorlake.errors import NotFound, SensorlakeError, TransientError
from sensorlake.log.base import AppendResult, Envelope, LogBatch, Span
from sensorlake.log.memory import (
    Consumer,
    LogClosed,
    LogCore,
    Row,
    build_batch,
    describe_offsets,
    now_us,
    prune_upto,
    take_rows,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    "offset" INTEGER PRIMARY KEY AUTOINCREMENT, msg_id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL, device_id TEXT NOT NULL, source TEXT NOT NULL, codec TEXT NOT NULL,
    received_at INTEGER NOT NULL, seq INTEGER, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS consumers (
    name TEXT PRIMARY KEY, acked INTEGER NOT NULL DEFAULT 0,
    claim_first INTEGER, claim_last INTEGER, acked_at INTEGER);
CREATE TABLE IF NOT EXISTS watermarks (
    tenant TEXT NOT NULL, device_id TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (tenant, device_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending_seqs (
    tenant TEXT NOT NULL, device_id TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (tenant, device_id, seq)) WITHOUT ROWID;
"""
COLUMNS = '"offset", msg_id, tenant, device_id, source, codec, received_at, seq, payload'
UPSERT_MARK = ("INSERT INTO watermarks (tenant, device_id, seq) VALUES (?, ?, ?) "
               "ON CONFLICT (tenant, device_id) DO UPDATE SET seq = excluded.seq")
UPSERT_CONSUMER = (
    "INSERT INTO consumers (name, acked, claim_first, claim_last, acked_at) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET acked = excluded.acked, "
    "claim_first = excluded.claim_first, claim_last = excluded.claim_last, "
    "acked_at = coalesce(excluded.acked_at, acked_at)")
ID_CHUNK = 4000
INSERT_CHUNK = 256


@functools.cache
def _insert_sql(rows: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * rows)
    return f"INSERT INTO entries ({COLUMNS}) VALUES {values} ON CONFLICT (msg_id) DO NOTHING"


class _Recheck(Exception):
    """The fast path met a known msg_id or a full log: redo the commit with a lookup."""


class LogWriteError(TransientError):
    """The log could not commit (disk full, I/O error, locked file); retry later."""


@dataclass
class _Append:
    envelopes: Sequence[Envelope]
    future: Future[AppendResult]


@dataclass
class _Control:
    work: Callable[[sqlite3.Connection], Callable[[], Any]]
    """Runs inside the transaction; returns what to apply to the cache after COMMIT."""
    future: Future[Any]


class SQLiteLog(LogCore):
    """The Log protocol on one SQLite file (WAL, synchronous=FULL, group commit)."""

    def __init__(self, path: Path, max_bytes: int = 1 << 30, keep_acked_seconds: float = 3600,
                 group_commit_max: int = 10000, gather_seconds: float = 0.0005) -> None:
        super().__init__(max_bytes, keep_acked_seconds, group_commit_max)
        self.gather_seconds = gather_seconds
        """Longest wait for more submitters before a commit (only when several are active)."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = self._lock()
        try:
            self._w = self._connect()
            self._w.executescript(SCHEMA)
            self._load()
        except BaseException:
            self._lock_file.close()
            raise
        self._queue: deque[_Append | _Control] = deque()
        self._qcond = threading.Condition()
        self._closing = False
        self._want = 1
        self._w_first = self._first
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._thread = threading.Thread(target=self._run, name="sensorlake-log-writer",
                                        daemon=True)
        self._thread.start()

    # -- opening --------------------------------------------------------------------------

    def _lock(self) -> Any:
        handle = open(self.path.with_name(self.path.name + ".lock"), "a+b")  # noqa: SIM115
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                handle.close()
                raise SensorlakeError(
                    f"log {self.path} is already open (another sensorlake process, or an "
                    "unclosed SQLiteLog); stop it or use another data_dir") from exc
        return handle

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                               check_same_thread=False, cached_statements=256)
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        return conn

    def _load(self) -> None:
        conn = self._w
        low, high, stored = conn.execute(
            'SELECT min("offset"), max("offset"), coalesce(sum(length(payload)), 0) '
            "FROM entries").fetchone()
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'entries'").fetchone()
        self._last = max(high or 0, row[0] if row else 0)
        self._first = low if low is not None else self._last + 1
        self._stored = stored
        for name, acked, cf, cl in conn.execute(
                "SELECT name, acked, claim_first, claim_last FROM consumers"):
            self._consumers[name] = Consumer(acked, Span(cf, cl) if cf is not None else None)
        seqs = self._seqs
        for tenant, device, seq in conn.execute("SELECT tenant, device_id, seq FROM watermarks"):
            seqs.marks[(tenant, device)] = seq
        for tenant, device, seq in conn.execute(
                "SELECT tenant, device_id, seq FROM pending_seqs"):
            seqs.pending.setdefault((tenant, device), set()).add(seq)

    # -- the writer thread ----------------------------------------------------------------

    def submit(self, envelopes: Sequence[Envelope]) -> Future[AppendResult]:
        future: Future[AppendResult] = Future()
        if not envelopes:
            future.set_result(AppendResult())
            return future
        self._enqueue(_Append(envelopes, future))
        return future

    def _enqueue(self, request: _Append | _Control) -> None:
        with self._qcond:
            if self._closing:
                raise LogClosed(f"log {self.path} is closed")
            self._queue.append(request)
            if len(self._queue) == self._want:
                self._qcond.notify()

    def _control(self, work: Callable[[sqlite3.Connection], Callable[[], T]]) -> T:
        future: Future[T] = Future()
        self._enqueue(_Control(work, future))
        return future.result()

    def _run(self) -> None:
        last = 0  # requests in the previous group commit
        try:
            while True:
                with self._qcond:
                    while not self._queue:
                        if self._closing:
                            return
                        self._qcond.wait()
                    if last > 1 and len(self._queue) < last and self.gather_seconds > 0:
                        # Concurrent submitters: wait briefly for the ones just answered, so
                        # they share this commit instead of alternating in two half groups.
                        self._want = last
                        self._qcond.wait_for(lambda: len(self._queue) >= last or self._closing,
                                             self.gather_seconds)
                        self._want = 1
                    items = self._take()
                if isinstance(items, _Control):
                    self._run_control(items)
                else:
                    self._commit_appends(items)
                    last = len(items)
        finally:
            self._w.close()

    def _take(self) -> _Control | list[_Append]:
        """The next control request, or the queued appends for one commit (holds _qcond)."""
        queue = self._queue
        head = queue.popleft()
        if isinstance(head, _Control):
            return head
        items, count = [head], len(head.envelopes)
        while queue:
            nxt = queue[0]
            if not isinstance(nxt, _Append) or count + len(nxt.envelopes) > self.group_commit_max:
                break
            items.append(nxt)
            queue.popleft()
            count += len(nxt.envelopes)
        return items

    def _begin(self) -> sqlite3.Connection:
        self._w.execute("BEGIN IMMEDIATE")
        self._w_first = self._first
        return self._w

    def _rollback(self) -> None:
        if self._w.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._w.execute("ROLLBACK")

    def _failure(self, exc: BaseException) -> BaseException:
        if isinstance(exc, sqlite3.Error | OSError):
            err = LogWriteError(f"log {self.path} could not commit: {exc}; retry later")
            err.__cause__ = exc
            return err
        return exc

    def _commit_appends(self, items: list[_Append], check: bool = False) -> None:
        """Write the requests in one transaction. The fast path lets INSERT skip known msg_ids
        and redoes the commit with an explicit check when it did (or when the log is full)."""
        try:
            conn = self._begin()
            ids = [e.msg_id for it in items for e in it.envelopes] if check else []
            known = self._known(ids)
            stage = self._seqs.stage()
            plan = self._plan([it.envelopes for it in items], known, stage,
                              lambda need: self._delete_acked(self._floor(), need, None))
            if not check and any(isinstance(r, BaseException) for r in plan.results):
                raise _Recheck
            if self._insert(plan.rows) != len(plan.rows):
                raise _Recheck
            marks, added, removed = stage.changes()
            if marks:
                conn.executemany(UPSERT_MARK, marks)
            if added:
                conn.executemany("INSERT OR IGNORE INTO pending_seqs VALUES (?, ?, ?)", added)
            if removed:
                conn.executemany(
                    "DELETE FROM pending_seqs WHERE tenant = ? AND device_id = ? AND seq = ?",
                    removed)
            conn.execute("COMMIT")
        except _Recheck:
            self._rollback()
            self._commit_appends(items, check=True)
            return
        except BaseException as exc:
            self._rollback()
            if len(items) > 1 and not isinstance(exc, sqlite3.Error | OSError):
                for item in items:  # isolate the request that broke the commit
                    self._commit_appends([item])
                return
            failure = self._failure(exc)
            for item in items:
                item.future.set_exception(failure)
            return
        with self._cond:
            self._last, self._first, self._stored = plan.last, self._w_first, plan.stored
            stage.apply()
            self.commits += 1
            self._cond.notify_all()
        for item, outcome in zip(items, plan.results, strict=True):
            if isinstance(outcome, BaseException):
                item.future.set_exception(outcome)
            else:
                item.future.set_result(outcome)

    def _run_control(self, item: _Control) -> None:
        try:
            apply = item.work(self._begin())
            self._w.execute("COMMIT")
        except BaseException as exc:
            self._rollback()
            item.future.set_exception(self._failure(exc))
            return
        with self._cond:
            result = apply()
            self.commits += 1
            self._cond.notify_all()
        item.future.set_result(result)

    def _insert(self, rows: list[Row]) -> int:
        """Insert with few statements (each SQLite step lets other threads take the GIL):
        chunks of power-of-two sizes, so only a few distinct statements get prepared."""
        conn, done, before = self._w, 0, self._w.total_changes
        while done < len(rows):
            size = min(INSERT_CHUNK, 1 << ((len(rows) - done).bit_length() - 1))
            chunk = rows[done:done + size]
            conn.execute(_insert_sql(size), [value for row in chunk for value in row])
            done += size
        return conn.total_changes - before

    def _known(self, ids: list[str]) -> set[str]:
        """Which of `ids` the log already holds."""
        known: set[str] = set()
        for i in range(0, len(ids), ID_CHUNK):
            chunk = ids[i:i + ID_CHUNK]
            sql = f"SELECT msg_id FROM entries WHERE msg_id IN ({','.join('?' * len(chunk))})"
            known.update(r[0] for r in self._w.execute(sql, chunk))
        return known

    def _delete_acked(self, floor: int, need: int | None, cutoff_us: int | None) -> int:
        """Delete an acknowledged prefix inside the writer's transaction; bytes freed."""
        cur = self._w.execute(
            'SELECT "offset", received_at, length(payload) FROM entries '
            'WHERE "offset" <= ? ORDER BY "offset"', (floor,))
        try:
            upto, freed = prune_upto(cur, need, cutoff_us)
        finally:
            cur.close()
        if upto:
            self._w.execute('DELETE FROM entries WHERE "offset" <= ?', (upto,))
            self._w_first = max(self._w_first, upto + 1)
        return freed

    def _prune_work(self, conn: sqlite3.Connection, floor: int) -> Callable[[], int]:
        freed = self._delete_acked(floor, None, self._cutoff_us())
        first = self._w_first

        def apply() -> int:
            pruned = first - self._first
            self._first, self._stored = first, self._stored - freed
            return pruned
        return apply

    # -- control writes -------------------------------------------------------------------

    def claim(self, consumer: str, span: Span) -> None:
        def work(conn: sqlite3.Connection) -> Callable[[], None]:
            acked = self.position(consumer)
            conn.execute(UPSERT_CONSUMER, (consumer, acked, span.first, span.last, None))
            return lambda: self._set_consumer(consumer, Consumer(acked, span))
        self._control(work)

    def ack(self, consumer: str, span: Span) -> None:
        self._check_ack(span)

        def work(conn: sqlite3.Connection) -> Callable[[], None]:
            acked = max(self.position(consumer), span.last)
            conn.execute(UPSERT_CONSUMER, (consumer, acked, None, None, now_us()))
            prune = self._prune_work(conn, self._floor(consumer, acked))

            def apply() -> None:
                self._set_consumer(consumer, Consumer(acked, None))
                prune()
            return apply
        self._control(work)

    def replay(self, consumer: str, from_offset: int) -> None:
        def work(conn: sqlite3.Connection) -> Callable[[], None]:
            self._check_replay(consumer, from_offset)
            conn.execute(UPSERT_CONSUMER, (consumer, from_offset - 1, None, None, None))
            return lambda: self._set_consumer(consumer, Consumer(from_offset - 1, None))
        self._control(work)

    def prune(self) -> int:
        """Delete acknowledged envelopes older than keep_acked_seconds; returns how many."""
        return self._control(lambda conn: self._prune_work(conn, self._floor()))

    def _set_consumer(self, name: str, consumer: Consumer) -> None:
        self._consumers[name] = consumer

    # -- reading --------------------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        if self._closed:
            raise LogClosed(f"log {self.path} is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            with self._cond:
                conn = self._connect()
                conn.execute("PRAGMA query_only = ON")
                self._readers.append(conn)
            self._local.conn = conn
        return conn

    def _read_rows(self, after: int, max_messages: int, max_bytes: int) -> list[Row]:
        cur = self._reader().execute(
            f'SELECT {COLUMNS} FROM entries WHERE "offset" > ? ORDER BY "offset" LIMIT ?',
            (after, max_messages))
        try:
            return take_rows(cur, max_messages, max_bytes)
        finally:
            cur.close()

    def _received_at(self, offset: int) -> int | None:
        row = self._reader().execute(
            'SELECT received_at FROM entries WHERE "offset" >= ? ORDER BY "offset" LIMIT 1',
            (offset,)).fetchone()
        return row[0] if row else None

    def read_span(self, span: Span) -> LogBatch:
        rows = self._reader().execute(
            f'SELECT {COLUMNS} FROM entries WHERE "offset" BETWEEN ? AND ? ORDER BY "offset"',
            (span.first, span.last)).fetchall()
        if len(rows) != span.count:
            present = {r[0] for r in rows}
            missing = [o for o in range(span.first, span.last + 1) if o not in present]
            raise NotFound(f"log offsets {describe_offsets(missing)} are not retained in "
                           f"{self.path} (pruned after acknowledgement, or never appended)")
        return build_batch(rows)

    def close(self) -> None:
        """Finish queued work, stop the writer, close the connections (idempotent)."""
        with self._qcond:
            self._closing = True
            self._qcond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join()
        with self._cond:
            self._closed = True
            readers, self._readers = self._readers, []
            self._cond.notify_all()
        for conn in readers:
            conn.close()
        self._lock_file.close()
