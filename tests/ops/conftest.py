"""Fixtures for the ops tests: runtimes on temp data folders (closed at teardown), envelopes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from sensorlake.config import load_settings
from sensorlake.log.base import Envelope
from sensorlake.registry import Device
from sensorlake.runtime import Runtime


def envelope(device: str, seq: int, readings: dict[str, float], ts: str | None = None,
             tenant: str = "default", received_us: int | None = None) -> Envelope:
    doc: dict[str, Any] = {"device": device, "seq": seq, "readings": readings}
    if ts:
        doc["ts"] = ts
    return Envelope(msg_id=f"{tenant}/{device}/seq/{seq}", tenant=tenant, device_id=device,
                    source="test", codec="envelope", payload=orjson.dumps(doc),
                    received_at_us=received_us or time.time_ns() // 1000, seq=seq)


def post_seconds(runtime: Runtime, first: int, count: int) -> None:
    """Append messages first..first+count-1 of aq-1, one pm2_5 reading per second."""
    runtime.log.append([envelope("aq-1", seq, {"pm2_5": float(seq)},
                                 ts=f"2026-11-23T10:{seq // 60:02d}:{seq % 60:02d}Z")
                        for seq in range(first, first + count)])


def run_worker_until(runtime: Runtime, done: Callable[[], bool], timeout: float = 20,
                     meanwhile: Callable[[], None] | None = None) -> None:
    """Run the worker's loop on a thread (after `meanwhile()`, if given, runs beside it)
    until `done()` or `timeout`, then stop it."""
    stop = threading.Event()
    runner = threading.Thread(target=runtime.worker.run, args=(stop,))
    runner.start()
    try:
        if meanwhile is not None:
            meanwhile()
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            stop.wait(0.05)
    finally:
        stop.set()
        runner.join(30)


def drain(runtime: Runtime, timeout: float = 30) -> None:
    """Step the (not started) worker until it processed the whole log, then flush the lake."""
    deadline = time.monotonic() + timeout
    while runtime.worker.cursor < runtime.log.stats().last_offset:
        runtime.worker.step(wait=0.01)
        assert time.monotonic() < deadline, "worker did not drain the log"
    runtime.worker.flush_if_due(force=True)


@pytest.fixture
def make_runtime(tmp_path: Path) -> Iterator[Callable[..., Runtime]]:
    runtimes: list[Runtime] = []

    def build(devices: tuple[str, ...] = ("aq-1", "aq-2"), **overrides: Any) -> Runtime:
        overrides.setdefault("jobs", {"enabled": False})
        worker = {"lake_flush_seconds": 3600, "poll_seconds": 0.05, "linger_seconds": 0,
                  **overrides.pop("worker", {})}
        settings = load_settings(data_dir=tmp_path / f"data{len(runtimes)}", worker=worker,
                                 **overrides)
        runtime = Runtime(settings)
        runtimes.append(runtime)
        runtime.registry.upsert([Device(id=d, lat=52.1, lon=5.1) for d in devices])
        return runtime

    yield build
    for runtime in runtimes:
        runtime.close()
