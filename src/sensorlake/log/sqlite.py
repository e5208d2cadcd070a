"""SQLiteLog: the embedded durable log, one SQLite file in WAL mode with group commit.

One writer thread owns the write connection: `submit` queues a request, the writer takes all
queued appends (up to group_commit_max envelopes), writes them in one transaction
(synchronous=FULL) and resolves their futures after COMMIT returned. Claims, acks, replays and
prunes go through it too. Readers use a connection per thread (WAL: never blocking the
writer). Offsets, size, consumers and watermarks are cached; the cache changes only after a
commit. One SQLiteLog per file at a time: a lock file next to it enforces that.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from sensorlake.errors import SensorlakeError, TransientError
from sensorlake.log import memory
from sensorlake.log.base import AppendResult, Envelope, Span
from sensorlake.log.memory import Consumer, LogClosed, Plan, Row, SeqStage
from sensorlake.threads import start_thread

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
UPSERT_MARK = ("INSERT INTO watermarks VALUES (?, ?, ?) "
               "ON CONFLICT (tenant, device_id) DO UPDATE SET seq = excluded.seq")
UPSERT_CONSUMER = (
    "INSERT INTO consumers VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
    "acked = excluded.acked, claim_first = excluded.claim_first, "
    "claim_last = excluded.claim_last, acked_at = coalesce(excluded.acked_at, acked_at)")
INSERT_CHUNK = 256
ONE_STATEMENT = 64
TAIL_BYTES = 32 << 20
TAIL_ROWS = 200_000
"""The newest committed entries kept in memory, so a consumer at the head of the log reads
them without a query (fetching rows through sqlite3 costs a few µs each)."""


@functools.cache
def _insert_sql(rows: int) -> str:
    return f"INSERT INTO entries ({COLUMNS}) VALUES " + ", ".join(["(?,?,?,?,?,?,?,?,?)"] * rows)


class LogWriteError(TransientError):
    """The log could not commit (disk full, I/O error, locked file); retry later."""


@dataclass
class _Request:
    future: Future[Any]
    envelopes: Sequence[Envelope] = ()
    work: Callable[[], Callable[[], Any]] | None = None
    """A control write: runs in the transaction, returns the cache update for after COMMIT."""
    groups: Sequence[Sequence[Envelope]] | None = None
    """From `submit_many`: several appends, one result each, resolved as one list."""

    @property
    def parts(self) -> Sequence[Sequence[Envelope]]:
        return self.groups if self.groups is not None else (self.envelopes,)

    @property
    def size(self) -> int:
        return sum(len(part) for part in self.parts)


class SQLiteLog(memory.LogCore):
    """The Log protocol on one SQLite file (WAL, synchronous=FULL, group commit)."""

    def __init__(self, path: Path, max_bytes: int = 1 << 30, keep_acked_seconds: float = 3600,
                 group_commit_max: int = 10000, gather_seconds: float = 0.0005) -> None:
        super().__init__(max_bytes, keep_acked_seconds, group_commit_max)
        self.gather_seconds = gather_seconds
        """Longest wait for more submitters before a commit (only when several are active)."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = self._lock()
        self._tail: list[Row] = []
        self._tail_bytes = 0
        try:
            self._w = self._connect()
            self._w.executescript(SCHEMA)
            self._load()
        except BaseException:
            self._lock_file.close()
            raise
        self._queue: deque[_Request] = deque()
        self._qcond = threading.Condition()
        self._closing, self._want, self._w_first = False, 1, self._first
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._thread = start_thread(self._run, "sensorlake-log")

    def _lock(self) -> IO[bytes]:
        handle = open(self.path.with_name(self.path.name + ".lock"), "a+b")  # noqa: SIM115
        try:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.close()
            raise SensorlakeError(f"log {self.path} is already open (another sensorlake process "
                                  "or SQLiteLog); stop it or use another data_dir") from exc
        return handle

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                               check_same_thread=False, cached_statements=256)
        for pragma in ("busy_timeout = 30000", "journal_mode = WAL", "synchronous = FULL",
                       "journal_size_limit = 67108864"):
            conn.execute(f"PRAGMA {pragma}")
        return conn

    def _load(self) -> None:
        """Read offsets, size, consumers and watermarks from the file into the cache."""
        q = self._w.execute
        low, high, stored = q('SELECT min("offset"), max("offset"), '
                              "coalesce(sum(length(payload)), 0) FROM entries").fetchone()
        row = q("SELECT seq FROM sqlite_sequence WHERE name = 'entries'").fetchone()
        consumers = {name: Consumer(acked, Span(cf, cl) if cf is not None else None) for
                     name, acked, cf, cl, _ in q("SELECT * FROM consumers")}
        seqs = memory.SeqTracker()
        seqs.marks = {(t, d): s for t, d, s in q("SELECT * FROM watermarks")}
        for tenant, device, seq in q("SELECT * FROM pending_seqs"):
            seqs.pending.setdefault((tenant, device), set()).add(seq)
        self._last = max(high or 0, row[0] if row else 0)
        self._first = low if low is not None else self._last + 1
        self._stored, self._consumers, self._seqs = stored, consumers, seqs
        self._tail.clear()  # the file is the truth again; the tail restarts at the next commit
        self._tail_bytes = 0

    def submit(self, envelopes: Sequence[Envelope]) -> Future[AppendResult]:
        future: Future[AppendResult] = Future()
        if envelopes:
            self._enqueue(_Request(future, envelopes))
        else:
            future.set_result(AppendResult())
        return future

    def submit_many(self, groups: Sequence[Sequence[Envelope]],
                    ) -> Future[list[AppendResult | BaseException]]:
        future: Future[list[AppendResult | BaseException]] = Future()
        if any(groups):
            self._enqueue(_Request(future, groups=list(groups)))
        else:
            future.set_result([AppendResult() for _ in groups])
        return future

    def _enqueue(self, request: _Request) -> None:
        with self._qcond:
            if self._closing:
                raise LogClosed(f"log {self.path} is closed")
            self._queue.append(request)
            if len(self._queue) == self._want:
                self._qcond.notify()

    def _control(self, work: Callable[[], Callable[[], T]]) -> T:
        future: Future[T] = Future()
        self._enqueue(_Request(future, work=work))
        return future.result()

    def _run(self) -> None:
        """The writer thread. Done callbacks of the futures run here: they must not block."""
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
                        self._qcond.wait(self.gather_seconds)
                        self._want = 1
                    items = self._take()
                if items[0].work is not None:
                    self._run_control(items[0])
                else:
                    self._commit_appends(items)
                    last = len(items)
        finally:
            self._w.close()

    def _take(self) -> list[_Request]:
        """One control request, or the queued appends for one commit (holds _qcond)."""
        queue = self._queue
        items = [queue.popleft()]
        count = items[0].size
        while items[0].work is None and queue and queue[0].work is None:
            count += queue[0].size
            if count > self.group_commit_max:
                break
            items.append(queue.popleft())
        return items

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            if self._w.in_transaction:
                self._w.execute("ROLLBACK")

    def _failure(self, exc: BaseException) -> BaseException:
        """The error for the futures of a failed commit (SQLite and OS errors: transient)."""
        if not isinstance(exc, sqlite3.Error | OSError):
            return exc
        with contextlib.suppress(sqlite3.Error), self._cond:
            row = self._w.execute("SELECT seq FROM sqlite_sequence WHERE name = 'entries'")
            if (row.fetchone() or (0,))[0] != self._last:
                self._load()  # the failed COMMIT reached the file after all: re-read it
        err = LogWriteError(f"log {self.path} could not commit: {exc}; retry later")
        err.__cause__ = exc
        return err

    def _commit_appends(self, items: list[_Request], check: bool = False) -> None:
        if not check:  # a future cancelled before its commit is not written
            items = [it for it in items if it.future.set_running_or_notify_cancel()]
        stage = SeqStage(self._seqs)
        try:
            plan = self._write([part for it in items for part in it.parts], stage, check)
        except BaseException as exc:
            self._rollback()
            if not check and isinstance(exc, sqlite3.IntegrityError):
                plan = None  # a known msg_id: redo with the lookup
            elif len(items) > 1 and not isinstance(exc, sqlite3.Error | OSError):
                for item in items:  # isolate the request that broke the commit
                    self._commit_appends([item], check=True)
                return
            else:
                failure = self._failure(exc)
                for item in items:
                    item.future.set_exception(failure)
                return
        if plan is None:
            self._rollback()
            self._commit_appends(items, check=True)
            return
        self._publish(lambda: self._applied(plan, stage))
        outcomes = iter(plan.results)
        for item in items:
            if item.groups is None:
                memory.settle(item.future, next(outcomes))
            else:
                item.future.set_result([next(outcomes) for _ in item.groups])

    def _applied(self, plan: Plan, stage: SeqStage) -> None:
        self._last, self._first, self._stored = plan.last, self._w_first, plan.stored
        stage.apply()
        self._remember(plan.rows)

    def _remember(self, rows: list[Row]) -> None:
        """Add a commit's rows to the in-memory tail (holds _cond). The tail holds contiguous
        offsets only; when full, its older half goes."""
        if not rows:
            return
        tail = self._tail
        if tail and rows[0][0] != tail[-1][0] + 1:
            tail.clear()
            self._tail_bytes = 0
        tail.extend(rows)
        self._tail_bytes += sum(len(row[8]) for row in rows)
        if len(tail) > TAIL_ROWS or self._tail_bytes > TAIL_BYTES:
            drop = len(tail) // 2 or 1
            self._tail_bytes -= sum(len(row[8]) for row in tail[:drop])
            del tail[:drop]

    def _run_control(self, item: _Request) -> None:
        assert item.work is not None
        try:
            self._w.execute("BEGIN IMMEDIATE")
            self._w_first = self._first
            apply = item.work()
            self._w.execute("COMMIT")
        except BaseException as exc:
            self._rollback()
            item.future.set_exception(self._failure(exc))
        else:
            item.future.set_result(self._publish(apply))

    def _write(self, groups: list[Sequence[Envelope]], stage: SeqStage,
               check: bool) -> Plan | None:
        """Write one group commit; durable on return. The fast path assumes no msg_id is
        known (else the INSERT fails: IntegrityError) and that the log has room (else None);
        then the caller redoes the commit with `check`. A small insert without seqs is one
        autocommit statement: each SQLite call lets other threads take the GIL."""
        conn, self._w_first = self._w, self._first
        if check:
            conn.execute("BEGIN IMMEDIATE")
            known = self._known([e.msg_id for envelopes in groups for e in envelopes])
            plan = self._plan(groups, known, stage,
                              lambda need: self._delete_acked(self._floor(), need, None))
        else:
            plan = self._plan(groups, set(), stage, lambda need: 0)
            if any(isinstance(r, BaseException) for r in plan.results):
                return None
            if not stage.marks and len(plan.rows) <= ONE_STATEMENT:
                self._insert(plan.rows)
                return plan
            conn.execute("BEGIN IMMEDIATE")
        self._insert(plan.rows)
        marks, added, removed = stage.changes()
        conn.executemany(UPSERT_MARK, marks)
        conn.executemany("INSERT OR IGNORE INTO pending_seqs VALUES (?, ?, ?)", added)
        conn.executemany("DELETE FROM pending_seqs WHERE tenant = ? AND device_id = ? "
                         "AND seq = ?", removed)
        conn.execute("COMMIT")
        return plan

    def _insert(self, rows: list[Row]) -> None:
        """One statement when small, else chunks of power-of-two sizes (few SQLite calls and
        few distinct statements to prepare)."""
        done = 0
        while done < len(rows):
            left = len(rows) - done
            size = left if left <= ONE_STATEMENT else min(INSERT_CHUNK, 1 << left.bit_length() - 1)
            chunk = rows[done:done + size]
            self._w.execute(_insert_sql(size), [value for row in chunk for value in row])
            done += size

    def _known(self, ids: list[str]) -> set[str]:
        """Which of `ids` the log already holds."""
        sql = "SELECT msg_id FROM entries WHERE msg_id IN (SELECT value FROM json_each(?))"
        return {row[0] for row in self._w.execute(sql, (json.dumps(ids),))}

    def _delete_acked(self, floor: int, need: int | None, cutoff_us: int | None) -> int:
        """Delete an acknowledged prefix inside the writer's transaction; bytes freed."""
        cur = self._w.execute('SELECT "offset", received_at, length(payload) FROM entries '
                              'WHERE "offset" <= ? ORDER BY "offset"', (floor,))
        with contextlib.closing(cur):
            upto, freed = memory.prune_upto(cur, need, cutoff_us)
        if upto:
            self._w.execute('DELETE FROM entries WHERE "offset" <= ?', (upto,))
            self._w_first = max(self._w_first, upto + 1)
        return freed

    def _update(self, name: str | None, consumer: Consumer | None = None,
                acked_at: int | None = None, prune: bool = False) -> Callable[[], int]:
        """In the writer's transaction: store `consumer` as `name`, then (prune) delete what
        all consumers acknowledged before keep_acked_seconds. Returns the cache update to run
        after COMMIT, which answers the number of entries pruned."""
        floor = self._floor()
        if name is not None and consumer is not None:
            claim = consumer.claim
            self._w.execute(UPSERT_CONSUMER, (name, consumer.acked, claim.first if claim else None,
                                              claim.last if claim else None, acked_at))
            floor = self._floor(name, consumer.acked)
        freed = self._delete_acked(floor, None, self._cutoff_us()) if prune else 0
        first = self._w_first

        def apply() -> int:
            if name is not None and consumer is not None:
                self._consumers[name] = consumer
            pruned, self._first, self._stored = first - self._first, first, self._stored - freed
            return pruned
        return apply

    def claim(self, consumer: str, span: Span) -> None:
        self._control(lambda: self._update(consumer, Consumer(self.position(consumer), span)))

    def ack(self, consumer: str, span: Span) -> None:
        self._check_ack(span)
        self._control(lambda: self._update(
            consumer, Consumer(max(self.position(consumer), span.last)), memory.now_us(), True))

    def replay(self, consumer: str, from_offset: int) -> None:
        def work() -> Callable[[], int]:
            self._check_replay(consumer, from_offset)
            return self._update(consumer, Consumer(from_offset - 1))
        self._control(work)

    def prune(self) -> int:
        """Delete acknowledged envelopes older than keep_acked_seconds; returns how many."""
        return self._control(lambda: self._update(None, prune=True))

    def _query(self, sql: str, params: tuple[int, ...]) -> sqlite3.Cursor:
        """Run a read on this thread's own connection."""
        if self._closed:
            raise LogClosed(f"log {self.path} is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            with self._cond:
                if self._closed:
                    raise LogClosed(f"log {self.path} is closed")
                conn = self._local.conn = self._connect()
                conn.execute("PRAGMA query_only = ON")
                self._readers.append(conn)
        return conn.execute(sql, params)

    def _read_rows(self, after: int, max_messages: int, max_bytes: int) -> list[Row]:
        rows = None
        with self._cond:
            if after >= self._last:
                return []
            tail = self._tail
            start = after + 1 - tail[0][0] if tail else -1
            if start >= 0 and after + 1 >= self._first:
                rows = tail[start:start + max_messages]
        if rows is not None:
            return memory.take_rows(rows, max_messages, max_bytes)
        with contextlib.closing(self._query(
                f'SELECT {COLUMNS} FROM entries WHERE "offset" > ? ORDER BY "offset" LIMIT ?',
                (after, max_messages))) as cur:
            return memory.take_rows(cur, max_messages, max_bytes)

    def _span_rows(self, span: Span) -> list[Row]:
        return self._query(f'SELECT {COLUMNS} FROM entries WHERE "offset" BETWEEN ? AND ? '
                           'ORDER BY "offset"', (span.first, span.last)).fetchall()

    def _received_at(self, offset: int) -> int | None:
        row = self._query('SELECT received_at FROM entries WHERE "offset" >= ? '
                          'ORDER BY "offset" LIMIT 1', (offset,)).fetchone()
        return row[0] if row else None

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
