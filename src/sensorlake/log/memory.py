"""MemoryLog: the Log protocol in memory, with exactly the semantics of SQLiteLog.

For fast tests and plugin authors; nothing survives the process. `LogCore` (offsets, size cap,
watermarks, consumers) is shared with SQLiteLog, so both decide the same way.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Self, TypeVar

import pyarrow as pa

from sensorlake.errors import Backpressure, NotFound, TransientError
from sensorlake.log.base import LOG_ENTRY_SCHEMA, AppendResult, Envelope, LogBatch, LogStats, Span

T = TypeVar("T")
Key = tuple[str, str]
Row = tuple[int, str, str, str, str, str, int, int | None, bytes]
"""One entry in LOG_ENTRY_SCHEMA column order (received_at in µs)."""


class LogClosed(TransientError):
    """The log was closed (shutting down); retry against the next instance."""


def now_us() -> int:
    return time.time_ns() // 1000


def settle(future: Future[T], outcome: T | BaseException) -> None:
    """Resolve `future` with a result or an exception."""
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def describe_missing(first: int, last: int, present: Iterable[int]) -> str:
    """The offsets of first..last not in `present` as runs (`3-5, 9`), found from the gaps
    between present offsets: a huge absent range is one run, not a list of its offsets."""
    runs: list[tuple[int, int]] = []
    expected = first
    for off in sorted({o for o in present if first <= o <= last}):
        if off > expected:
            runs.append((expected, off - 1))
        expected = off + 1
    if expected <= last:
        runs.append((expected, last))
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def take_rows(rows: Iterable[Row], max_messages: int, max_bytes: int) -> list[Row]:
    """Rows in order until max_messages, or until the next would exceed max_bytes (>= 1 row)."""
    out: list[Row] = []
    total = 0
    for row in rows:
        total += len(row[8])
        if out and total > max_bytes:
            break
        out.append(row)
        if len(out) >= max_messages:
            break
    return out


def build_batch(rows: Sequence[Row]) -> LogBatch:
    """A LogBatch (LOG_ENTRY_SCHEMA) from rows, built column by column."""
    if not rows:
        return LogBatch(LOG_ENTRY_SCHEMA.empty_table())
    columns = zip(*rows, strict=True)
    arrays = [pa.array(col, type=f.type) for col, f in zip(columns, LOG_ENTRY_SCHEMA, strict=True)]
    return LogBatch(pa.Table.from_arrays(arrays, schema=LOG_ENTRY_SCHEMA))


def prune_upto(rows: Iterable[tuple[int, int, int]], need: int | None,
               cutoff_us: int | None) -> tuple[int, int]:
    """The acknowledged prefix to delete: (its last offset or 0, bytes freed). `rows` are
    (offset, received_at, bytes) ascending. With `need`: oldest first until that many bytes
    are freed. Else: up to the first received at or after `cutoff_us` (None: all of them)."""
    upto = freed = 0
    for offset, received_at, size in rows:
        if need is None and cutoff_us is not None and received_at >= cutoff_us:
            break
        upto, freed = offset, freed + size
        if need is not None and freed >= need:
            break
    return upto, freed


class SeqTracker:
    """Per (tenant, device): the contiguous watermark and the seqs seen above it."""

    def __init__(self) -> None:
        self.marks: dict[Key, int] = {}
        self.pending: dict[Key, set[int]] = {}


class SeqStage:
    """The watermark changes of one commit; `apply` them once the commit succeeded."""

    def __init__(self, base: SeqTracker) -> None:
        self.base = base
        self.marks: dict[Key, int] = {}
        self.pending: dict[Key, set[int]] = {}

    def add(self, key: Key, seq: int) -> None:
        if key not in self.marks:
            self.marks[key] = self.base.marks.get(key, 0)
            self.pending[key] = set(self.base.pending.get(key, ()))
        mark, pending = self.marks[key], self.pending[key]
        if seq == mark + 1:
            mark = seq
            while mark + 1 in pending:
                mark += 1
                pending.remove(mark)
            self.marks[key] = mark
        elif seq > mark:
            pending.add(seq)

    def get(self, key: Key) -> int | None:
        mark = self.marks.get(key)
        return self.base.marks.get(key) if mark is None else mark

    def changes(self) -> tuple[list[tuple[str, str, int]], list[tuple[str, str, int]],
                               list[tuple[str, str, int]]]:
        """(watermark upserts, pending seqs added, pending seqs removed)."""
        marks, added, removed = [], [], []
        for key, mark in self.marks.items():
            old, new = self.base.pending.get(key, set()), self.pending[key]
            marks.append((*key, mark))
            added += [(*key, s) for s in new - old]
            removed += [(*key, s) for s in old - new]
        return marks, added, removed

    def apply(self) -> None:
        self.base.marks.update(self.marks)
        for key, pending in self.pending.items():
            if pending:
                self.base.pending[key] = pending
            else:
                self.base.pending.pop(key, None)


@dataclass
class Consumer:
    acked: int = 0
    claim: Span | None = None


@dataclass
class Plan:
    """What one commit of append requests writes, and each request's outcome."""

    rows: list[Row] = field(default_factory=list)
    results: list[AppendResult | BaseException] = field(default_factory=list)
    last: int = 0
    stored: int = 0


class LogCore(ABC):
    """State and decisions shared by the log backends (one writer mutates, under `_cond`)."""

    def __init__(self, max_bytes: int, keep_acked_seconds: float, group_commit_max: int) -> None:
        self.max_bytes = max_bytes
        self.keep_acked_seconds = keep_acked_seconds
        self.group_commit_max = group_commit_max
        self.commits = 0
        """Transactions committed (a group commit counts once)."""
        self._cond = threading.Condition()
        self._first, self._last, self._stored = 1, 0, 0
        """Lowest retained offset (last + 1 when none), highest appended, payload bytes."""
        self._closed = False
        self._consumers: dict[str, Consumer] = {}
        self._seqs = SeqTracker()

    @abstractmethod
    def submit(self, envelopes: Sequence[Envelope]) -> Future[AppendResult]: ...
    @abstractmethod
    def _read_rows(self, after: int, max_messages: int, max_bytes: int) -> list[Row]: ...
    @abstractmethod
    def _span_rows(self, span: Span) -> list[Row]: ...
    @abstractmethod
    def _received_at(self, offset: int) -> int | None: ...
    @abstractmethod
    def close(self) -> None: ...

    def _publish(self, update: Callable[[], T]) -> T:
        """Apply a commit's cache update, count the commit and wake waiting readers."""
        with self._cond:
            result = update()
            self.commits += 1
            self._cond.notify_all()
            return result

    def _plan(self, groups: Sequence[Sequence[Envelope]], known: set[str], stage: SeqStage,
              make_room: Callable[[int], int]) -> Plan:
        """Decide duplicates, offsets, size and watermarks for the requests of one commit.
        `make_room(need)` deletes acknowledged entries and returns the bytes it freed."""
        plan = Plan(last=self._last, stored=self._stored)
        seen: set[str] = set()
        for envelopes in groups:
            fresh: list[Envelope] = []
            ids: set[str] = set()
            for e in envelopes:
                if e.msg_id not in known and e.msg_id not in seen and e.msg_id not in ids:
                    ids.add(e.msg_id)
                    fresh.append(e)
            size = sum(len(e.payload) for e in fresh)
            if size and plan.stored + size > self.max_bytes:
                if size <= self.max_bytes:
                    plan.stored -= make_room(plan.stored + size - self.max_bytes)
                if plan.stored + size > self.max_bytes:
                    plan.results.append(Backpressure(
                        f"log is full: {plan.stored} bytes of {self.max_bytes}; consumers are "
                        "behind — wait, or raise log.max_bytes", retry_after=1.0))
                    continue
            seen |= ids
            plan.stored += size
            for e in fresh:
                plan.last += 1
                plan.rows.append((plan.last, e.msg_id, e.tenant, e.device_id, e.source, e.codec,
                                  e.received_at_us, e.seq, e.payload))
                if e.seq is not None:
                    stage.add((e.tenant, e.device_id), e.seq)
            marks = {k: m for k in {(e.tenant, e.device_id) for e in envelopes}
                     if (m := stage.get(k)) is not None}
            plan.results.append(AppendResult(len(fresh), len(envelopes) - len(fresh), marks))
        return plan

    def _floor(self, consumer: str | None = None, acked: int = 0) -> int:
        """The offset every consumer acknowledged (with `consumer` at `acked`); 0 if none."""
        values = [c.acked for n, c in self._consumers.items() if n != consumer]
        return min([*values, acked] if consumer is not None else values, default=0)

    def _cutoff_us(self) -> int | None:
        seconds = self.keep_acked_seconds
        return None if seconds <= 0 else now_us() - int(seconds * 1_000_000)

    def _check_ack(self, span: Span) -> None:
        with self._cond:
            if span.last > self._last:
                raise ValueError(f"cannot acknowledge {span.first}..{span.last}: the log ends at "
                                 f"offset {self._last}")

    def _check_replay(self, consumer: str, from_offset: int) -> None:
        first, last = self._first, self._last
        if from_offset < 1 or from_offset > last + 1:
            raise ValueError(f"cannot replay {consumer!r} from offset {from_offset}: offsets "
                             f"run from 1 to {last}")
        if from_offset < first:
            kept = f"offsets {first}..{last}" if first <= last else "no envelopes"
            raise NotFound(
                f"cannot replay {consumer!r} from offset {from_offset}: the log retains {kept}; "
                "older ones were pruned after acknowledgement (log.keep_acked_seconds)")

    def append(self, envelopes: Sequence[Envelope]) -> AppendResult:
        return self.submit(envelopes).result()

    def read(self, after: int, max_messages: int = 5000, max_bytes: int = 16 << 20,
             wait: float = 0.0) -> LogBatch:
        rows = self._read_rows(after, max_messages, max_bytes)
        if not rows and wait > 0:
            with self._cond:
                self._cond.wait_for(lambda: self._last > after or self._closed, timeout=wait)
            rows = self._read_rows(after, max_messages, max_bytes)
        return build_batch(rows)

    def read_span(self, span: Span) -> LogBatch:
        rows = self._span_rows(span)
        if len(rows) != span.count:
            missing = describe_missing(span.first, span.last, (row[0] for row in rows))
            raise NotFound(f"log offsets {missing} are not retained "
                           "(pruned after acknowledgement, or never appended)")
        return build_batch(rows)

    def claimed(self, consumer: str) -> Span | None:
        with self._cond:
            return self._consumers.get(consumer, Consumer()).claim

    def position(self, consumer: str) -> int:
        with self._cond:
            return self._consumers.get(consumer, Consumer()).acked

    def watermarks(self, tenant: str, devices: Sequence[str]) -> dict[str, int]:
        with self._cond:
            marks = self._seqs.marks
            return {d: m for d in devices if (m := marks.get((tenant, d))) is not None}

    def stats(self) -> LogStats:
        """oldest_unacked_us is the received_at of the first envelope (by offset) that the
        slowest consumer has not acknowledged."""
        with self._cond:
            acked = {n: c.acked for n, c in self._consumers.items()}
            first, last, stored = self._first, self._last, self._stored
        floor = min(acked.values(), default=0)
        oldest = self._received_at(max(floor + 1, first)) if last > floor else None
        return LogStats(first if first <= last else 0, last, stored, self.max_bytes, acked, oldest)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class MemoryLog(LogCore):
    """The Log protocol in memory; futures resolve at once; thread-safe."""

    def __init__(self, max_bytes: int = 1 << 30, keep_acked_seconds: float = 3600,
                 group_commit_max: int = 10000) -> None:
        super().__init__(max_bytes, keep_acked_seconds, group_commit_max)
        self._rows: dict[int, Row] = {}
        self._ids: set[str] = set()

    def submit(self, envelopes: Sequence[Envelope]) -> Future[AppendResult]:
        future: Future[AppendResult] = Future()
        with self._cond:
            if self._closed:
                raise LogClosed("the log is closed")
            known = {e.msg_id for e in envelopes if e.msg_id in self._ids}
            stage = SeqStage(self._seqs)
            plan = self._plan([envelopes], known, stage,
                              lambda need: self._delete_acked(self._floor(), need, None))
            self._publish(lambda: self._applied(plan, stage))
        settle(future, plan.results[0])
        return future

    def submit_many(self, groups: Sequence[Sequence[Envelope]],
                    ) -> Future[list[AppendResult | BaseException]]:
        future: Future[list[AppendResult | BaseException]] = Future()
        with self._cond:
            if self._closed:
                raise LogClosed("the log is closed")
            known = {e.msg_id for group in groups for e in group if e.msg_id in self._ids}
            stage = SeqStage(self._seqs)
            plan = self._plan(groups, known, stage,
                              lambda need: self._delete_acked(self._floor(), need, None))
            self._publish(lambda: self._applied(plan, stage))
        future.set_result(list(plan.results))
        return future

    def _applied(self, plan: Plan, stage: SeqStage) -> None:
        for row in plan.rows:
            self._rows[row[0]] = row
            self._ids.add(row[1])
        self._last, self._stored = plan.last, plan.stored
        stage.apply()

    def _delete_acked(self, floor: int, need: int | None, cutoff_us: int | None) -> int:
        """Delete an acknowledged prefix (see prune_upto); returns the bytes freed."""
        rows = self._rows
        scan = ((o, rows[o][6], len(rows[o][8]))
                for o in range(self._first, min(floor, self._last) + 1))
        upto, freed = prune_upto(scan, need, cutoff_us)
        for offset in range(self._first, upto + 1):
            self._ids.discard(rows.pop(offset)[1])
        self._first = max(self._first, upto + 1)
        return freed

    def _read_rows(self, after: int, max_messages: int, max_bytes: int) -> list[Row]:
        with self._cond:
            if self._closed:
                raise LogClosed("the log is closed")
            scan = (self._rows[o] for o in range(max(after + 1, self._first), self._last + 1))
            return take_rows(scan, max_messages, max_bytes)

    def _span_rows(self, span: Span) -> list[Row]:
        with self._cond:
            rows = self._rows
            if span.count <= len(rows):
                return [r for o in range(span.first, span.last + 1) if (r := rows.get(o))]
            return [r for o, r in rows.items() if span.first <= o <= span.last]  # ascending

    def _received_at(self, offset: int) -> int | None:
        with self._cond:
            row = self._rows.get(offset)
            return row[6] if row else None

    def claim(self, consumer: str, span: Span) -> None:
        with self._cond:
            self._consumers[consumer] = Consumer(self.position(consumer), span)

    def ack(self, consumer: str, span: Span) -> None:
        self._check_ack(span)
        with self._cond:
            self._consumers[consumer] = Consumer(max(self.position(consumer), span.last))
            self.prune()

    def replay(self, consumer: str, from_offset: int) -> None:
        with self._cond:
            self._check_replay(consumer, from_offset)
            self._consumers[consumer] = Consumer(from_offset - 1)

    def prune(self) -> int:
        """Delete acknowledged envelopes older than keep_acked_seconds; returns how many."""
        with self._cond:
            before = self._first
            self._stored -= self._delete_acked(self._floor(), None, self._cutoff_us())
            return self._first - before

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
