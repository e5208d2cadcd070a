"""The edge agent's outbox: readings kept on the device until sensorlake confirms them.

One SQLite file (WAL, synchronous=FULL). Appends from any thread are group-committed by
one writer thread: every call waits until its rows are durable, and concurrent calls share
one commit.

    append ─▶ pending (one row per reading set, no seq yet)
    seal   ─▶ messages (device, seq, entries): the next per-device seq, the set rows moved in
    confirm(watermark) ─▶ delete messages with seq <= watermark (never anything above)

A seq is given when a message is sealed for upload, so a backlog never leaves a gap that
holds the watermark back, and a sealed message is resent byte for byte (same seq, so the
log stores it once). When full, `reject` refuses the append (OutboxFull) and `drop-oldest`
deletes the oldest *pending* sets, counted per device; sealed messages are never dropped.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import orjson

from sensorlake.errors import Backpressure, InputError
from sensorlake.registry import is_valid_device_id

T = TypeVar("T")
SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    id INTEGER PRIMARY KEY AUTOINCREMENT, device TEXT NOT NULL, readings INTEGER NOT NULL,
    appended_at REAL NOT NULL, body BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS pending_by_device ON pending (device, id);
CREATE TABLE IF NOT EXISTS messages (
    device TEXT NOT NULL, seq INTEGER NOT NULL, sets INTEGER NOT NULL, readings INTEGER NOT NULL,
    oldest_at REAL NOT NULL, entries BLOB NOT NULL, PRIMARY KEY (device, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS devices (
    device TEXT PRIMARY KEY, next_seq INTEGER NOT NULL DEFAULT 1,
    watermark INTEGER NOT NULL DEFAULT 0, last_ack_at REAL,
    appended INTEGER NOT NULL DEFAULT 0, confirmed INTEGER NOT NULL DEFAULT 0,
    dropped_sets INTEGER NOT NULL DEFAULT 0, dropped_readings INTEGER NOT NULL DEFAULT 0);
"""
WhenFull = Literal["reject", "drop-oldest"]
Reading = tuple[int, dict[str, float]]
"""(ts in µs since the epoch, {metric: value}): one reading set."""


class OutboxFull(Backpressure):
    """The outbox is at max_bytes and refuses new readings (when_full = reject)."""


@dataclass
class Sealed:
    """One upload message: the bytes to send carry `seq`."""

    device: str
    seq: int
    sets: int
    body: bytes


def envelope(device: str, seq: int, entries: bytes) -> bytes:
    """`{"device": ..., "seq": ..., "batch": [entries]}` without re-encoding the entries."""
    return b'{"device":%s,"seq":%d,"batch":[%s]}' % (orjson.dumps(device), seq, entries)


def entry(ts_us: int, readings: dict[str, float]) -> bytes:
    """One batch entry; ts as epoch milliseconds (a fraction keeps the microseconds)."""
    ts = ts_us // 1000 if ts_us % 1000 == 0 else ts_us / 1000
    return orjson.dumps({"ts": ts, "readings": readings})


class Outbox:
    """Durable readings of one or more devices, waiting for the server's watermark."""

    def __init__(self, path: Path, max_bytes: int = 256 << 20, when_full: WhenFull = "reject",
                 clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.when_full = when_full
        self.clock = clock
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=30)
        for pragma in ("journal_mode = WAL", "synchronous = FULL", "busy_timeout = 30000"):
            self._db.execute(f"PRAGMA {pragma}")
        self._db.executescript(SCHEMA)
        self._bytes = self._db.execute(
            "SELECT (SELECT coalesce(sum(length(body)), 0) FROM pending) + "
            "(SELECT coalesce(sum(length(entries)), 0) FROM messages)").fetchone()[0]
        self._queue: deque[tuple[list[tuple[str, int, bytes]], Future[int]]] = deque()
        self._control: deque[tuple[Callable[[], Any], Future[Any]]] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="outbox", daemon=True)
        self._thread.start()

    # -- appending ---------------------------------------------------------------------------
    def append(self, device: str, readings: dict[str, float], ts_us: int | None = None) -> None:
        """Append one reading set (stamped now when ts_us is None); durable on return."""
        self.append_many(device, [(ts_us if ts_us is not None else int(self.clock() * 1e6),
                                   readings)])

    def append_many(self, device: str, items: Iterable[Reading]) -> int:
        """Append reading sets in one durable commit (shared with concurrent callers);
        returns how many. Raises OutboxFull (reject) when they do not fit."""
        if not is_valid_device_id(device):
            raise InputError(f"device id '{device}' is not valid (letters, digits, ._:- up to "
                             "128 characters)")
        rows = [(device, len(readings), entry(ts, readings)) for ts, readings in items]
        if not rows:
            return 0
        future: Future[int] = Future()
        with self._cond:
            self._queue.append((rows, future))
            self._cond.notify()
        return future.result()

    # -- the writer thread -------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._control:
                    if self._closing:
                        return
                    self._cond.wait()
                controls = list(self._control)
                self._control.clear()
                appends = list(self._queue)
                self._queue.clear()
            for work, future in controls:
                self._transaction(work, future)
            if appends:
                self._commit_appends(appends)

    def _transaction(self, work: Callable[[], T], future: Future[T]) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            result = work()
            self._db.execute("COMMIT")
        except BaseException as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            future.set_exception(exc)
        else:
            future.set_result(result)

    def _commit_appends(self, appends: list[tuple[list[tuple[str, int, bytes]], Future[int]]]
                        ) -> None:
        accepted: list[tuple[list[tuple[str, int, bytes]], Future[int]]] = []
        before = self._bytes

        def work() -> None:
            for rows, future in appends:
                size = sum(len(r[2]) for r in rows)
                if self._bytes + size > self.max_bytes and not self._make_room(size):
                    future.set_exception(OutboxFull(
                        f"outbox {self.path} is full ({self._bytes:,} of {self.max_bytes:,} "
                        f"bytes): readings refused; the uploader has to catch up first, or "
                        "raise --max-bytes, or use --when-full drop-oldest"))
                    continue
                now = self.clock()
                self._db.executemany("INSERT INTO pending (device, readings, appended_at, body)"
                                     " VALUES (?, ?, ?, ?)", [(d, n, now, b) for d, n, b in rows])
                counts: dict[str, int] = {}
                for d, _, _ in rows:
                    counts[d] = counts.get(d, 0) + 1
                self._db.executemany(
                    "INSERT INTO devices (device, appended) VALUES (?, ?) ON CONFLICT (device) "
                    "DO UPDATE SET appended = appended + excluded.appended", counts.items())
                self._bytes += size
                accepted.append((rows, future))

        done: Future[None] = Future()
        self._transaction(work, done)
        if done.exception() is not None:
            self._bytes = before
            for _, future in appends:
                if not future.done():
                    future.set_exception(done.exception())  # type: ignore[arg-type]
            return
        for rows, future in accepted:
            future.set_result(len(rows))

    def _make_room(self, size: int) -> bool:
        """drop-oldest: delete the oldest pending sets until `size` fits (in the writer's
        transaction); False when it cannot (reject, or only sealed messages left)."""
        if self.when_full != "drop-oldest" or size > self.max_bytes:
            return False
        need = self._bytes + size - self.max_bytes
        cursor = self._db.execute("SELECT id, device, readings, length(body) FROM pending "
                                  "ORDER BY id")
        freed, upto = 0, 0
        dropped: dict[str, list[int]] = {}
        for row_id, device, readings, length in cursor:
            freed += length
            upto = row_id
            counts = dropped.setdefault(device, [0, 0])
            counts[0] += 1
            counts[1] += readings
            if freed >= need:
                break
        cursor.close()
        if freed < need:
            return False
        self._db.execute("DELETE FROM pending WHERE id <= ?", (upto,))
        self._db.executemany(
            "UPDATE devices SET dropped_sets = dropped_sets + ?, dropped_readings = "
            "dropped_readings + ? WHERE device = ?",
            [(sets, readings, device) for device, (sets, readings) in dropped.items()])
        self._bytes -= freed
        return True

    def _call(self, work: Callable[[], T]) -> T:
        future: Future[T] = Future()
        with self._cond:
            if self._closing:
                raise RuntimeError(f"outbox {self.path} is closed")
            self._control.append((work, future))
            self._cond.notify()
        return future.result()

    # -- uploading ---------------------------------------------------------------------------
    def seal(self, device: str, max_sets: int, live_after: float | None = None) -> Sealed | None:
        """Move up to `max_sets` pending sets of `device` into the next message: the oldest
        ones, or with `live_after` the oldest of those appended after that time."""
        def work() -> Sealed | None:
            sql = "SELECT id, readings, appended_at, body FROM pending WHERE device = ?"
            params: tuple[Any, ...] = (device,)
            if live_after is not None:
                sql += " AND appended_at >= ?"
                params += (live_after,)
            rows = self._db.execute(sql + " ORDER BY id LIMIT ?", (*params, max_sets)).fetchall()
            if not rows:
                return None
            seq = self._db.execute("SELECT next_seq FROM devices WHERE device = ?",
                                   (device,)).fetchone()[0]
            entries = b",".join(r[3] for r in rows)
            self._db.execute("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?)",
                             (device, seq, len(rows), sum(r[1] for r in rows),
                              min(r[2] for r in rows), entries))
            self._db.executemany("DELETE FROM pending WHERE id = ?", [(r[0],) for r in rows])
            self._db.execute("UPDATE devices SET next_seq = ? WHERE device = ?",
                             (seq + 1, device))
            self._bytes += len(entries) - sum(len(r[3]) for r in rows)
            return Sealed(device, seq, len(rows), envelope(device, seq, entries))
        return self._call(work)

    def unconfirmed(self, device: str) -> list[Sealed]:
        """Sealed messages above the watermark, by seq (what a restart resends)."""
        rows = self._call(lambda: self._db.execute(
            "SELECT seq, sets, entries FROM messages WHERE device = ? ORDER BY seq",
            (device,)).fetchall())
        return [Sealed(device, seq, sets, envelope(device, seq, entries))
                for seq, sets, entries in rows]

    def confirm(self, device: str, watermark: int) -> int:
        """The server stored every seq up to `watermark`: delete those messages (only
        those); returns the reading sets confirmed. A watermark above every seq this outbox
        sealed means the server knew this device before the outbox (a new file): the
        unconfirmed messages then move above it so that none is mistaken for a duplicate."""
        def work() -> int:
            row = self._db.execute("SELECT next_seq, watermark FROM devices WHERE device = ?",
                                   (device,)).fetchone()
            if row is None or watermark <= row[1]:
                return 0
            if watermark >= row[0]:
                self._rebase(device, watermark)
                return 0
            sets, size = self._db.execute(
                "SELECT coalesce(sum(sets), 0), coalesce(sum(length(entries)), 0) FROM "
                "messages WHERE device = ? AND seq <= ?", (device, watermark)).fetchone()
            self._db.execute("DELETE FROM messages WHERE device = ? AND seq <= ?",
                             (device, watermark))
            self._db.execute("UPDATE devices SET watermark = ?, last_ack_at = ?, confirmed = "
                             "confirmed + ? WHERE device = ?",
                             (watermark, self.clock(), sets, device))
            self._bytes -= size
            return int(sets)
        return self._call(work)

    def rebase(self, device: str, watermark: int) -> None:
        """Move every unconfirmed message of `device` above `watermark` (the server held
        these seqs before this outbox existed, so it took ours for duplicates)."""
        self._call(lambda: self._rebase(device, watermark))

    def _rebase(self, device: str, watermark: int) -> None:
        next_seq = self._db.execute("SELECT next_seq FROM devices WHERE device = ?",
                                    (device,)).fetchone()[0]
        shift = watermark + 1 - self._db.execute(
            "SELECT coalesce(min(seq), ?) FROM messages WHERE device = ?",
            (next_seq, device)).fetchone()[0]
        if shift > 0:
            self._db.execute("UPDATE messages SET seq = seq + ? + 1000000000 WHERE device = ?",
                             (shift, device))
            self._db.execute("UPDATE messages SET seq = seq - 1000000000 WHERE device = ?",
                             (device,))
            self._db.execute("UPDATE devices SET next_seq = next_seq + ? WHERE device = ?",
                             (shift, device))
        self._db.execute("UPDATE devices SET watermark = ?, last_ack_at = ? WHERE device = ?",
                         (watermark, self.clock(), device))

    # -- status ------------------------------------------------------------------------------
    def devices(self) -> list[str]:
        return [r[0] for r in self._call(lambda: self._db.execute(
            "SELECT device FROM devices ORDER BY device").fetchall())]

    def status(self) -> list[dict[str, Any]]:
        """Per device: backlog (sets not yet confirmed), oldest age, last ack, drops."""
        def work() -> list[tuple]:
            return self._db.execute("""
                SELECT d.device, d.watermark, d.last_ack_at, d.appended, d.confirmed,
                       d.dropped_sets, d.dropped_readings,
                       (SELECT count(*) FROM pending p WHERE p.device = d.device),
                       (SELECT coalesce(sum(sets), 0) FROM messages m WHERE m.device = d.device),
                       (SELECT count(*) FROM messages m WHERE m.device = d.device),
                       min((SELECT min(appended_at) FROM pending p WHERE p.device = d.device),
                           coalesce((SELECT min(oldest_at) FROM messages m
                                     WHERE m.device = d.device), 1e300))
                FROM devices d ORDER BY d.device""").fetchall()
        now = self.clock()
        out = []
        for (device, watermark, last_ack, appended, confirmed, dropped_sets, dropped_readings,
             pending, in_messages, messages, oldest) in self._call(work):
            out.append({
                "device": device, "backlog": pending + in_messages, "pending": pending,
                "unconfirmed_messages": messages,
                "oldest_age_seconds": None if oldest is None or oldest >= 1e300
                else round(now - oldest, 3),
                "watermark": watermark,
                "last_ack_age_seconds": None if last_ack is None else round(now - last_ack, 3),
                "appended": appended, "confirmed": confirmed, "dropped": dropped_sets,
                "dropped_readings": dropped_readings, "bytes": self._bytes,
                "max_bytes": self.max_bytes})
        return out

    @property
    def stored_bytes(self) -> int:
        return self._bytes

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
        self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
