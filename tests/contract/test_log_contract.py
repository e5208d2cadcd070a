"""The Log contract, checked against every backend (MemoryLog and SQLiteLog)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from sensorlake.config import Settings
from sensorlake.errors import Backpressure, NotFound, TransientError
from sensorlake.log import Log, MemoryLog, SQLiteLog, open_log
from sensorlake.log.base import LOG_ENTRY_SCHEMA, AppendResult, Envelope, Span
from sensorlake.log.jetstream import JetStreamLog
from sensorlake.log.memory import LogClosed
from server_support import delete_stream, jetstream_settings
from services import require_service

NOW = time.time_ns() // 1000
OLD = NOW - 7200 * 1_000_000  # older than keep_acked_seconds=3600


def env(msg_id: str | int, *, device: str = "d1", seq: int | None = None, size: int = 10,
        tenant: str = "t1", received_at: int | None = None) -> Envelope:
    return Envelope(msg_id=str(msg_id), tenant=tenant, device_id=device, source="http",
                    codec="envelope", payload=b"x" * size,
                    received_at_us=NOW if received_at is None else received_at, seq=seq)


def envs(ids: range, **kw: Any) -> list[Envelope]:
    return [env(i, **kw) for i in ids]


def offsets(log: Log, after: int = 0) -> list[int]:
    return log.read(after, 1_000_000, 1 << 40).table.column("offset").to_pylist()


class Factory:
    """Opens logs of one backend; `reopen` is a real restart for SQLite and JetStream (a new
    connection to the same stream), a no-op in memory."""

    def __init__(self, kind: str, folder: Path) -> None:
        self.kind, self.folder, self.kw = kind, folder, dict[str, Any]()
        self.opened: list[Any] = []
        self.stream = jetstream_settings() if kind == "jetstream" else None

    def __call__(self, **kw: Any) -> Any:
        self.kw = kw
        if self.kind == "jetstream":
            kw.pop("group_commit_max", None)
            log = JetStreamLog(self.stream, **kw)
        else:
            log = MemoryLog(**kw) if self.kind == "memory" else SQLiteLog(
                self.folder / "log" / "log.db", **kw)
        self.opened.append(log)
        return log

    def reopen(self, log: Any) -> Any:
        if self.kind == "memory":
            return log
        log.close()
        return self(**self.kw)


@pytest.fixture(params=["memory", "sqlite", "jetstream"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    if request.param == "jetstream":
        require_service("NATS", 4222)
    factory = Factory(request.param, tmp_path)
    yield factory
    for log in factory.opened:
        log.close()
    if factory.stream is not None:
        delete_stream(factory.stream)


def test_is_a_log_and_offsets_count_from_one(make: Factory) -> None:
    log = make()
    assert isinstance(log, Log)
    assert log.append([env(1), env(2)]) == AppendResult(2, 0, {})
    assert log.append(envs(range(3, 11))).accepted == 8
    batch = log.read(0)
    assert batch.table.schema == LOG_ENTRY_SCHEMA
    assert batch.table.column("offset").to_pylist() == list(range(1, 11))
    assert batch.table.column("msg_id").to_pylist() == [str(i) for i in range(1, 11)]
    assert batch.table.column("received_at").type == pa.timestamp("us", tz="UTC")
    assert batch.table.column("received_at")[0].value == NOW
    assert batch.table.column("payload")[0].as_py() == b"x" * 10
    assert batch.span == Span(1, 10) and len(batch) == 10


def test_read_limits(make: Factory) -> None:
    log = make()
    log.append(envs(range(1, 11)))
    assert log.read(0, max_messages=3).span == Span(1, 3)
    assert log.read(3, max_messages=3).span == Span(4, 6)
    assert log.read(0, max_bytes=25).span == Span(1, 2)
    assert log.read(0, max_bytes=30).span == Span(1, 3)
    assert log.read(4, max_bytes=1).span == Span(5, 5)  # always at least one entry
    empty = log.read(10)
    assert len(empty) == 0 and empty.span is None and empty.table.schema == LOG_ENTRY_SCHEMA


def test_read_wait_wakes_on_append(make: Factory) -> None:
    log = make()
    start = time.monotonic()
    assert len(log.read(0, wait=0.2)) == 0
    assert time.monotonic() - start >= 0.15
    timer = threading.Timer(0.2, lambda: log.append([env("late")]))
    timer.start()
    start = time.monotonic()
    batch = log.read(0, wait=10)
    timer.join()
    assert batch.table.column("msg_id").to_pylist() == ["late"]
    assert time.monotonic() - start < 5


def test_duplicates_are_no_ops(make: Factory) -> None:
    log = make()
    assert log.append([env("a"), env("a"), env("b")]) == AppendResult(2, 1, {})
    assert log.append([env("a"), env("c")]) == AppendResult(1, 1, {})
    assert log.read(0).table.column("msg_id").to_pylist() == ["a", "b", "c"]


def test_submit_many_gives_each_group_its_own_outcome(make: Factory) -> None:
    """Groups submitted together are independent appends: duplicates are counted per group
    (also across groups), and a group that does not fit is refused alone."""
    if make.kind == "jetstream":
        pytest.skip("byte-exact sizes: tests/server/test_jetstream.py checks submit_many")
    log = make(max_bytes=100)
    log.append([env("a", size=10)])
    outcomes = log.submit_many([
        [env("b", size=10, seq=1), env("a", size=10)],
        [env("b", size=10, seq=1)],
        [env("big", size=90)],
        [env("c", size=10, seq=2)],
    ]).result(timeout=10)
    assert [type(o).__name__ for o in outcomes] == [
        "AppendResult", "AppendResult", "Backpressure", "AppendResult"]
    assert (outcomes[0].accepted, outcomes[0].duplicates) == (1, 1)
    assert (outcomes[1].accepted, outcomes[1].duplicates) == (0, 1)
    assert outcomes[3].accepted == 1 and outcomes[3].watermarks == {("t1", "d1"): 2}
    assert offsets(log) == [1, 2, 3]
    assert log.submit_many([[], []]).result(timeout=10) == [AppendResult(), AppendResult()]


def test_watermarks(make: Factory) -> None:
    log = make()
    r = log.append([env(1, seq=1), env(2, seq=2), env(4, seq=4), env(5, seq=5)])
    assert r.watermarks == {("t1", "d1"): 2}
    assert log.append([env(6, seq=7, device="d2")]).watermarks == {("t1", "d2"): 0}
    r = log.append([env(3, seq=3), env(7, device="d3")])  # fills the gap; d3 sends no seq
    assert r.watermarks == {("t1", "d1"): 5}
    assert log.append([env(3, seq=3)]) == AppendResult(0, 1, {("t1", "d1"): 5})
    log.append([env(8, seq=2), env(9, seq=9), env(10, seq=1, tenant="t2")])
    assert log.watermarks("t1", ["d1", "d2", "d3", "nope"]) == {"d1": 5, "d2": 0}
    assert log.watermarks("t2", ["d1"]) == {"d1": 1}
    log = make.reopen(log)
    assert log.watermarks("t1", ["d1", "d2"]) == {"d1": 5, "d2": 0}
    assert log.append([env(11, seq=6), env(12)]).watermarks == {("t1", "d1"): 6}
    assert log.append([env(13, seq=8)]).watermarks == {("t1", "d1"): 6}
    assert log.append([env(14, seq=7)]).watermarks == {("t1", "d1"): 9}  # 8, 9 were pending
    log = make.reopen(log)
    assert log.watermarks("t1", ["d1"]) == {"d1": 9}


def test_backpressure_never_deletes_unacked(make: Factory) -> None:
    if make.kind == "jetstream":
        pytest.skip("byte-exact sizes: JetStream counts subjects and headers too; "
                    "tests/server/test_jetstream.py checks its backpressure")
    log = make(max_bytes=100)
    log.append(envs(range(1, 11)))  # 100 bytes: full
    with pytest.raises(Backpressure, match="log is full: 100 bytes of 100") as info:
        log.append([env(11)])
    assert info.value.retry_after > 0 and isinstance(info.value, TransientError)
    assert log.append([env(5)]) == AppendResult(0, 1, {})  # a duplicate takes no room
    with pytest.raises(Backpressure):
        log.append([env("huge", size=101)])
    assert offsets(log) == list(range(1, 11))
    log.ack("worker", Span(1, 4))
    assert offsets(log) == list(range(1, 11))  # kept for replay while there is room
    assert log.append(envs(range(11, 14))).accepted == 3  # makes room from acked 1..3 only
    assert offsets(log) == list(range(4, 14))
    with pytest.raises(Backpressure):  # 4 is acked, but two are needed: all or nothing
        log.append(envs(range(14, 16)))
    assert log.read_span(Span(5, 13)).span == Span(5, 13) and log.stats().last_offset == 13
    log.ack("worker", Span(5, 13))
    assert log.append(envs(range(14, 16))).accepted == 2
    assert offsets(log)[-1] == 15 and log.stats().stored_bytes <= 100


def test_consumers_claim_ack_position_survive_reopen(make: Factory) -> None:
    log = make()
    log.append(envs(range(1, 21)))
    assert log.position("worker") == 0 and log.claimed("worker") is None
    log.claim("worker", Span(1, 10))
    assert log.claimed("worker") == Span(1, 10)
    log = make.reopen(log)
    assert log.claimed("worker") == Span(1, 10) and log.position("worker") == 0
    log.ack("worker", Span(1, 10))
    assert log.claimed("worker") is None and log.position("worker") == 10
    log.claim("worker", Span(11, 15))
    log.ack("other", Span(1, 3))
    log.ack("worker", Span(1, 5))  # never moves back
    log = make.reopen(log)
    assert log.position("worker") == 10 and log.claimed("worker") is None
    assert log.position("other") == 3 and log.position("nobody") == 0
    with pytest.raises(ValueError, match="ends at offset 20"):
        log.ack("worker", Span(15, 25))


def test_replay(make: Factory) -> None:
    log = make(keep_acked_seconds=3600)
    log.append(envs(range(1, 11)))
    log.claim("worker", Span(1, 8))
    log.ack("worker", Span(1, 8))
    log.claim("worker", Span(9, 10))
    log.replay("worker", 3)
    assert log.position("worker") == 2 and log.claimed("worker") is None
    log = make.reopen(log)
    assert log.position("worker") == 2
    assert log.read(log.position("worker")).span == Span(3, 10)
    with pytest.raises(ValueError):
        log.replay("worker", 12)


def test_read_span_and_prune(make: Factory) -> None:
    log = make(keep_acked_seconds=3600)
    log.append(envs(range(1, 6), received_at=OLD) + envs(range(6, 11)))
    assert log.read_span(Span(3, 7)).table.column("offset").to_pylist() == [3, 4, 5, 6, 7]
    log.ack("worker", Span(1, 8))  # 1..5 are older than keep_acked_seconds, 6..8 are not
    assert offsets(log) == list(range(6, 11))
    with pytest.raises(NotFound, match="offsets 4-5 are not retained"):
        log.read_span(Span(4, 7))
    with pytest.raises(NotFound, match="11-12"):
        log.read_span(Span(10, 12))
    with pytest.raises(NotFound, match="offsets 4-5, 11-1000000000000 are not retained"):
        log.read_span(Span(4, 10**12))  # named as runs, not listed one by one
    log.append(envs(range(11, 13), received_at=OLD))
    log.ack("slow", Span(1, 7))
    assert log.prune() == 0  # 11..12 are old but above the slowest consumer's position
    assert offsets(log) == list(range(6, 13))


def test_pruned_offsets_are_gone_and_never_reused(make: Factory) -> None:
    log = make(keep_acked_seconds=0)
    log.append(envs(range(1, 11)))
    log.ack("worker", Span(1, 6))  # keep_acked_seconds=0: deleted on ack
    with pytest.raises(NotFound, match=r"retains offsets 7\.\.10"):
        log.replay("worker", 2)
    log.replay("worker", 7)
    assert log.position("worker") == 6
    log.ack("worker", Span(7, 10))
    assert log.stats().first_offset == 0 and log.stats().stored_bytes == 0
    log = make.reopen(log)
    assert log.stats().last_offset == 10 and offsets(log) == []
    log.append(envs(range(11, 13)))
    log.append([env(1)])  # a pruned msg_id is no longer known (JetStream: still within
    # its duplicate window, which does not depend on purging)
    assert offsets(log) == ([11, 12] if make.kind == "jetstream" else [11, 12, 13])


def test_prune_keeps_recent_acked_and_everything_unacked(make: Factory) -> None:
    log = make(keep_acked_seconds=3600)
    log.append(envs(range(1, 5), received_at=OLD) + envs(range(5, 8)))
    log.ack("b", Span(1, 2))
    log.ack("a", Span(1, 6))  # the slowest consumer bounds pruning
    assert offsets(log) == list(range(3, 8))
    log.ack("b", Span(3, 7))
    assert offsets(log) == [5, 6, 7]
    assert log.prune() == 0


def test_concurrent_submits_are_group_committed(make: Factory) -> None:
    futures: list[list[Future[AppendResult]]] = [[] for _ in range(8)]
    start, log = threading.Barrier(8), make()

    def submitter(t: int) -> None:
        start.wait()
        for i in range(500):
            futures[t].append(log.submit([env(f"{t}-{i}", device=f"d{t}", seq=i + 1)]))
            if i % 10 == 0:  # the same ids from every thread, often in one group commit
                futures[t].append(log.submit([env(f"shared-{i}")]))

    threads = [threading.Thread(target=submitter, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results = [f.result(timeout=60) for fs in futures for f in fs]
    assert sum(r.accepted for r in results) == 4050 and sum(r.duplicates for r in results) == 350
    assert offsets(log) == list(range(1, 4051))
    assert len(set(log.read(0, max_messages=5000).table.column("msg_id").to_pylist())) == 4050
    assert log.watermarks("t1", [f"d{t}" for t in range(8)]) == {f"d{t}": 500 for t in range(8)}
    if make.kind == "sqlite":
        assert log.commits < len(results)  # grouped
    elif make.kind == "memory":
        assert log.commits == len(results)  # MemoryLog commits each submit at once


def test_stats(make: Factory) -> None:
    if make.kind == "jetstream":
        pytest.skip("payload-byte sizes: JetStream reports stored bytes with headers; "
                    "tests/server/test_jetstream.py checks its stats")
    log = make(max_bytes=1000)
    assert (log.stats().first_offset, log.stats().last_offset, log.stats().oldest_unacked_us) == (
        0, 0, None)
    log.append([env(i, received_at=NOW + i) for i in range(1, 11)])
    s = log.stats()
    assert (s.first_offset, s.last_offset, s.stored_bytes, s.max_bytes) == (1, 10, 100, 1000)
    assert s.acked == {} and s.oldest_unacked_us == NOW + 1
    log.ack("worker", Span(1, 4))
    log.ack("lake", Span(1, 6))
    s = log.stats()
    assert s.acked == {"worker": 4, "lake": 6} and s.oldest_unacked_us == NOW + 5
    log.ack("worker", Span(5, 10))
    log.ack("lake", Span(7, 10))
    assert log.stats().oldest_unacked_us is None


def test_close_is_idempotent_and_final(make: Factory) -> None:
    with make() as log:
        future = log.submit([env(1)])
    assert future.result().accepted == 1
    log.close()
    with pytest.raises(LogClosed):
        log.append([env(2)])
    if make.kind == "sqlite":
        log = make()
        assert offsets(log) == [1]


@pytest.fixture
def sqlite_log(tmp_path: Path) -> Iterator[SQLiteLog]:
    with SQLiteLog(tmp_path / "log.db") as log:
        yield log


def test_sqlite_disk_full_fails_the_commit_not_the_thread(sqlite_log: SQLiteLog) -> None:
    def set_page_limit(pages: int) -> Callable[[], Callable[[], None]]:
        return lambda: (sqlite_log._w.execute(f"PRAGMA max_page_count = {pages}"), lambda: None)[1]

    sqlite_log.append([env(0, seq=1)])
    pages = sqlite_log._query("PRAGMA page_count", ()).fetchone()[0]
    sqlite_log._control(set_page_limit(pages + 2))
    with pytest.raises(TransientError, match="full") as info:
        for i in range(1, 100):
            sqlite_log.append([env(i, seq=i + 1, size=4000)])
    assert type(info.value).__name__ == "LogWriteError"
    futures = [sqlite_log.submit([env(f"x{i}", size=4000)]) for i in range(20)]
    assert any(f.exception() is not None for f in futures)
    sqlite_log._control(set_page_limit(1 << 30))
    stored = offsets(sqlite_log)
    assert stored == list(range(1, len(stored) + 1))
    mark = sqlite_log.watermarks("t1", ["d1"])["d1"]
    assert sqlite_log.append([env("after", seq=mark + 1)]).watermarks == {("t1", "d1"): mark + 1}
    assert offsets(sqlite_log)[-1] == len(stored) + 1


def test_sqlite_writer_survives_unexpected_errors(sqlite_log: SQLiteLog) -> None:
    bad = Envelope("bad", "t1", "d1", "http", "envelope", None, NOW)  # type: ignore[arg-type]
    futures = [sqlite_log.submit([env(1)]), sqlite_log.submit([bad]), sqlite_log.submit([env(2)])]
    assert futures[0].result().accepted == 1 and futures[2].result().accepted == 1
    with pytest.raises(TypeError):
        futures[1].result()
    assert sqlite_log.read(0).table.column("msg_id").to_pylist() == ["1", "2"]


def test_sqlite_readers_do_not_block_the_writer(sqlite_log: SQLiteLog) -> None:
    sqlite_log.append(envs(range(1, 101)))
    cursor = sqlite_log._query('SELECT * FROM entries WHERE "offset" > ?', (0,))
    assert cursor.fetchone() is not None  # a read transaction stays open
    start = time.monotonic()
    assert sqlite_log.append(envs(range(101, 111))).accepted == 10
    assert time.monotonic() - start < 5
    cursor.close()


def test_sqlite_one_writer_per_file(sqlite_log: SQLiteLog) -> None:
    with pytest.raises(Exception, match="already open"):
        SQLiteLog(sqlite_log.path)


def test_open_log_uses_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    with contextlib.closing(open_log(settings)) as log:
        assert isinstance(log, SQLiteLog) and log.max_bytes == settings.log.max_bytes
        assert log.path == tmp_path / "data" / "log" / "log.db" and log.path.exists()


CHILD = """
import sys, threading
from sensorlake.log.sqlite import SQLiteLog
from sensorlake.log.base import Envelope
log, lock = SQLiteLog(sys.argv[1]), threading.Lock()
def work(t, i=0):
    while True:
        batch = [Envelope(f"{t}-{i}-{k}", "t1", f"d{t}", "http", "envelope", b"p" * 300, 1,
                          i * 3 + k + 1) for k in range(3)]
        log.append(batch)
        with lock:
            print(*(e.msg_id for e in batch), flush=True)
        i += 1
for t in range(4):
    threading.Thread(target=work, args=(t,), daemon=True).start()
threading.Event().wait()
"""


@pytest.mark.slow
def test_sqlite_appends_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "log" / "log.db"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout is not None
    acknowledged: list[str] = []
    for line in child.stdout:
        acknowledged += line.split()
        if len(acknowledged) >= 3000:
            break
    os.kill(child.pid, signal.SIGKILL)
    rest, _ = child.communicate(timeout=30)
    acknowledged += rest.split()
    assert child.returncode == -signal.SIGKILL
    with SQLiteLog(path) as log:
        table = log.read(0, max_messages=10_000_000, max_bytes=1 << 40).table
        stored = set(table.column("msg_id").to_pylist())
        assert set(acknowledged) <= stored
        assert table.column("offset").to_pylist() == list(range(1, table.num_rows + 1))
        marks = log.watermarks("t1", [f"d{t}" for t in range(4)])
        for t in range(4):
            sent = [int(m.split("-")[1]) * 3 + int(m.split("-")[2]) + 1
                    for m in acknowledged if m.startswith(f"{t}-")]
            assert marks[f"d{t}"] >= max(sent)


def test_every_acknowledgement_counts_at_once(make: Factory) -> None:
    """A position just written bounds the next prune and shows in stats (JetStream's
    `kv.keys()` could miss a key put a moment before: about 1 in 300 on NATS 2.9)."""
    log = make(keep_acked_seconds=0)
    log.append(envs(range(1, 4)))
    for n in range(40):
        log.ack(f"reader-{n}", Span(1, 1 + n % 3))
        assert log.stats().acked[f"reader-{n}"] == 1 + n % 3
    log.ack("reader-0", Span(1, 3))
    assert log.stats().first_offset == 2  # reader-3, reader-6 ... are still at 1
