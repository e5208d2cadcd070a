"""SQLiteLog keeps its newest committed entries in memory: a reader at the head gets them
without a query, exactly as the file holds them; older offsets, a reopened log and a
pruned prefix still read from the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from sensorlake.log import SQLiteLog
from sensorlake.log import sqlite as sqlite_log
from sensorlake.log.base import Envelope


def envelopes(first: int, count: int) -> list[Envelope]:
    return [Envelope(f"t/d{k % 3}/seq/{k}", "t", f"d{k % 3}", "http", "envelope",
                     b"p" * (k % 7 + 1), 1_000 + k, k) for k in range(first, first + count)]


def from_file(log: SQLiteLog, after: int, count: int) -> list[tuple]:
    return log._query('SELECT "offset", msg_id, device_id, seq, payload FROM entries '
                      'WHERE "offset" > ? ORDER BY "offset" LIMIT ?', (after, count)).fetchall()


def keys(read: list[dict]) -> list[tuple]:
    return [(r["offset"], r["msg_id"], r["device_id"], r["seq"], r["payload"]) for r in read]


def rows(log: SQLiteLog, after: int, count: int = 1000, max_bytes: int = 1 << 20) -> list:
    return log.read(after, count, max_bytes).table.to_pylist()


def test_reads_at_the_head_come_from_memory_and_match_the_file(tmp_path: Path) -> None:
    with SQLiteLog(tmp_path / "log.db") as log:
        for start in (1, 51, 101):
            log.append(envelopes(start, 50))
        assert len(log._tail) == 150
        served = rows(log, 20, 100)
        log._tail.clear()  # the same read from the file
        assert served == rows(log, 20, 100) and len(served) == 100
        assert [r["offset"] for r in served] == list(range(21, 121))
        assert keys(served) == from_file(log, 20, 100)


def test_the_byte_limit_holds_on_the_memory_path(tmp_path: Path) -> None:
    with SQLiteLog(tmp_path / "log.db") as log:
        log.append(envelopes(1, 20))
        got = rows(log, 0, 20, max_bytes=10)
        assert 1 <= len(got) < 20 and sum(len(r["payload"]) for r in got[:-1]) <= 10
        assert rows(log, 20) == []


def test_offsets_that_left_the_tail_or_a_reopened_log_read_from_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_log, "TAIL_ROWS", 40)
    with SQLiteLog(tmp_path / "log.db") as log:
        for start in range(1, 101, 10):
            log.append(envelopes(start, 10))
        assert len(log._tail) <= 40 and log._tail[-1][0] == 100
        early = rows(log, 0, 100)
        assert [r["offset"] for r in early] == list(range(1, 101))
        assert keys(early) == from_file(log, 0, 100)
    with SQLiteLog(tmp_path / "log.db") as log:
        assert log._tail == []
        assert [r["offset"] for r in rows(log, 90)] == list(range(91, 101))
        log.append(envelopes(101, 5))
        assert [r["offset"] for r in rows(log, 90)] == list(range(91, 106))
