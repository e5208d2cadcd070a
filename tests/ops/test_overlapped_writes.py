"""A worker behind the log runs each batch's stages while the hot store commits the batch
before. A batch counts as processed only once its commit returned; a commit that fails in
the background is retried from the log, and nothing is lost or stored twice."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from conftest import post_seconds as post
from conftest import run_worker_until
from sensorlake.errors import SinkUnavailable
from sensorlake.runtime import Runtime


class FlakyHot:
    """Wraps the runtime's hot store: records which thread each write runs on; the write
    numbered `fail_at` raises SinkUnavailable once."""

    def __init__(self, hot: Any, fail_at: int | None = None) -> None:
        self.hot, self.fail_at, self.writes = hot, fail_at, 0
        self.threads: list[str] = []

    def write(self, readings: Any) -> int:
        self.writes += 1
        self.threads.append(threading.current_thread().name)
        if self.writes == self.fail_at:
            raise SinkUnavailable("hot store disk unplugged")
        return self.hot.write(readings)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.hot, name)


@pytest.mark.parametrize("overlap", [True, False])
def test_a_step_stores_everything_it_read(make_runtime: Callable[..., Runtime],
                                          overlap: bool) -> None:
    runtime = make_runtime(worker={"batch_messages": 10, "overlap_writes": overlap,
                                   "lake_flush_rows": 10**6})
    hot = FlakyHot(runtime.worker.hot)
    runtime.worker.hot = hot
    post(runtime, 1, 45)
    read = runtime.worker.step(wait=0.01)
    assert read == (45 if overlap else 10)  # full batches overlap; otherwise one per step
    assert runtime.worker.cursor == read
    assert runtime.hot.count() == read * 3  # pm2_5 + aqi_us + aqi_uk per message
    in_background = [t for t in hot.threads if t == "sensorlake-hot"]
    assert len(in_background) == (4 if overlap else 0)  # the 5th batch is short: inline


def test_a_failed_background_commit_is_redone_from_the_log(
        make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime(worker={"batch_messages": 10, "lake_flush_rows": 20})
    worker = runtime.worker
    hot = FlakyHot(worker.hot, fail_at=3)
    worker.hot = hot
    post(runtime, 1, 60)
    run_worker_until(runtime, lambda: worker.cursor >= 60 and bool(worker.stats.errors))
    assert worker.stats.errors == 1 and "unplugged" in (worker.stats.last_error or "")
    assert runtime.log.position(worker.consumer) == 60
    assert hot.threads[2] == "sensorlake-hot"  # the failed commit ran in the background
    assert runtime.hot.count() == 60 * 3  # every reading once, none twice
    assert runtime.hot.span_readings(1, 60).num_rows == 60 * 3
