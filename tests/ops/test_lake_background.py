"""The lake flush runs on its own thread: the worker keeps committing batches meanwhile, one
flush is in flight at a time, the log is acknowledged only after the files are durable, and
a failed flush is redone from the claimed span (no row lost, none written twice)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from conftest import post_seconds as post
from conftest import run_worker_until
from sensorlake.errors import SinkUnavailable
from sensorlake.runtime import Runtime


class GatedLake:
    """Wraps the runtime's lake: each write_span waits for `gate`; `fail` raises once."""

    def __init__(self, lake: Any) -> None:
        self.lake, self.gate, self.fail = lake, threading.Event(), False
        self.entered = threading.Event()
        self.spans: list[tuple[str, int, int]] = []

    def write_span(self, dataset: str, span: Any, table: Any) -> list[str]:
        self.entered.set()
        assert self.gate.wait(30)
        if self.fail:
            self.fail = False
            raise SinkUnavailable("lake disk unplugged")
        self.spans.append((dataset, span.first, span.last))
        return self.lake.write_span(dataset, span, table)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.lake, name)


@pytest.fixture
def gated(make_runtime: Callable[..., Runtime]) -> tuple[Runtime, GatedLake]:
    runtime = make_runtime(worker={"lake_flush_rows": 1, "batch_messages": 10})
    lake = GatedLake(runtime.lake)
    runtime.worker.lake = lake
    return runtime, lake


def test_batches_commit_while_a_flush_is_in_flight(gated: tuple[Runtime, GatedLake]) -> None:
    runtime, lake = gated
    worker = runtime.worker
    post(runtime, 1, 10)
    worker.step(wait=0.01)  # commits 1..10, starts flushing them on the lake thread
    assert lake.entered.wait(10)
    post(runtime, 11, 20)
    worker.step(wait=0.01)  # commits 11..20 although the flush is blocked
    worker.step(wait=0.01)  # and 21..30
    assert runtime.hot.count() >= 30 * 3  # pm2_5 + aqi_us + aqi_uk per message
    assert runtime.log.position(worker.consumer) == 0  # nothing acknowledged yet
    assert runtime.log.claimed(worker.consumer).last == 10  # type: ignore[union-attr]
    lake.gate.set()
    worker.flush_if_due(force=True)  # waits for 1..10, then flushes 11..30 at once
    assert runtime.log.position(worker.consumer) == 30
    assert [(f, la) for d, f, la in lake.spans if d == "readings"] == [(1, 10), (11, 30)]


def test_a_failed_background_flush_is_redone_from_its_claim(
        gated: tuple[Runtime, GatedLake]) -> None:
    runtime, lake = gated
    worker = runtime.worker
    lake.fail = True
    lake.gate.set()
    post(runtime, 1, 10)
    run_worker_until(runtime, lambda: runtime.log.position(worker.consumer) >= 20
                     and bool(worker.stats.errors), meanwhile=lambda: post(runtime, 11, 10))
    assert worker.stats.errors == 1 and "unplugged" in (worker.stats.last_error or "")
    assert runtime.log.position(worker.consumer) == 20
    readings_spans = [(f, la) for d, f, la in lake.spans if d == "readings"]
    covered = sorted(o for f, la in readings_spans for o in range(f, la + 1))
    assert covered == list(range(1, 21))  # every offset in exactly one lake file


class RecordingLake(GatedLake):
    """Records the raw/ table each flush writes."""

    def __init__(self, lake: Any) -> None:
        super().__init__(lake)
        self.gate.set()
        self.raw: list[Any] = []

    def write_span(self, dataset: str, span: Any, table: Any) -> list[str]:
        if dataset == "raw":
            self.raw.append((span, table))
        return super().write_span(dataset, span, table)


@pytest.mark.parametrize("keep_bytes", [96 << 20, 1])
def test_raw_file_holds_exactly_the_log_span(make_runtime: Callable[..., Runtime],
                                             monkeypatch: pytest.MonkeyPatch,
                                             keep_bytes: int) -> None:
    """The raw/ file is written from the entries the worker already read (or, past
    RAW_KEEP_BYTES, read back from the log): either way exactly `log.read_span`."""
    from sensorlake import pipeline_work
    monkeypatch.setattr(pipeline_work, "RAW_KEEP_BYTES", keep_bytes)
    runtime = make_runtime(worker={"lake_flush_rows": 10**6, "batch_messages": 7})
    lake = RecordingLake(runtime.lake)
    runtime.worker.lake = lake
    post(runtime, 1, 30)
    while runtime.worker.step(wait=0.01):
        pass
    runtime.worker.flush_if_due(force=True)
    [(span, table)] = lake.raw
    assert (span.first, span.last) == (1, 30)
    assert table.equals(runtime.log.read_span(span).table)
