"""The quality stage inside the embedded worker: flags are stored, a restarted worker starts
from the hot store's latest readings, a failed commit is retried with the same flags, and
device tags (cadence) come from the registry."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from sensorlake.config import load_settings
from sensorlake.errors import TransientError
from sensorlake.log.base import Envelope
from sensorlake.model import Quality
from sensorlake.registry import Device
from sensorlake.runtime import Runtime
from sensorlake.store.base import ReadingQuery

T0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=6)


def envelope(seq: int, minute: int, readings: dict[str, float], device: str = "aq-1",
             ) -> Envelope:
    ts = T0 + timedelta(minutes=minute)
    doc: dict[str, Any] = {"device": device, "seq": seq, "readings": readings,
                           "ts": ts.isoformat()}
    return Envelope(msg_id=f"default/{device}/seq/{seq}", tenant="default", device_id=device,
                    source="test", codec="envelope", payload=orjson.dumps(doc),
                    received_at_us=int(ts.timestamp() * 1e6) + 2_000_000, seq=seq)


def runtime(data: Path, tags: dict[str, str] | None = None) -> Runtime:
    settings = load_settings(data_dir=data, jobs={"enabled": False},
                             worker={"lake_flush_seconds": 3600, "linger_seconds": 0})
    rt = Runtime(settings)
    rt.registry.upsert([Device(id="aq-1", lat=52.1, lon=5.1, tags=tags or {})])
    return rt


def drain(rt: Runtime) -> None:
    deadline = time.monotonic() + 30
    while rt.worker.cursor < rt.log.stats().last_offset:
        rt.worker.step(wait=0.01)
        assert time.monotonic() < deadline


def stored(rt: Runtime, metric: str) -> list[tuple[float, int]]:
    table = rt.hot.readings(ReadingQuery(tenant="default", metrics=(metric,), start=T0,
                                         end=T0 + timedelta(days=1), with_quality=True))
    return list(zip(table.column("value").to_pylist(), table.column("quality").to_pylist(),
                    strict=True))


def test_flags_are_stored_and_a_restarted_worker_remembers(tmp_path: Path) -> None:
    rt = runtime(tmp_path / "data")
    rt.log.append([envelope(1, 0, {"pm2_5": 8.0}), envelope(2, 1, {"pm2_5": 800.0})])
    drain(rt)
    assert stored(rt, "pm2_5") == [(8.0, 0), (800.0, Quality.SPIKE)]
    assert stored(rt, "aqi_us")[1][1] == Quality.SPIKE
    rt.close()
    again = runtime(tmp_path / "data")  # a new process: the stage knows nothing yet
    again.log.append([envelope(3, 121, {"pm2_5": 790.0})])
    drain(again)
    # compared with the stored 800.0 two hours earlier: a gap (3 × 600 s), no spike
    assert stored(again, "pm2_5")[-1] == (790.0, Quality.GAP)
    again.close()


def test_a_failed_hot_commit_is_retried_with_the_same_flags(tmp_path: Path) -> None:
    rt = runtime(tmp_path / "data")
    rt.log.append([envelope(1, 0, {"temperature": 20.0})])
    drain(rt)
    rt.worker.flush_if_due(force=True)  # acknowledged: a retry re-reads only what follows
    write, failures = rt.hot.write, []

    def flaky(readings):  # type: ignore[no-untyped-def]
        if not failures:
            failures.append(1)
            raise TransientError("hot store briefly unavailable")
        return write(readings)

    rt.hot.write = flaky  # type: ignore[method-assign]
    rt.log.append([envelope(2, 1, {"temperature": 30.0})])
    deadline = time.monotonic() + 30
    while rt.worker.cursor < rt.log.stats().last_offset:
        try:
            rt.worker.step(wait=0.01)
        except TransientError:
            rt.worker._rewind()  # what Worker.run does after a transient error
        assert time.monotonic() < deadline
    assert failures == [1]
    assert stored(rt, "temperature") == [(20.0, 0), (30.0, Quality.SPIKE)]
    rt.close()


def test_cadence_tag_from_the_registry(tmp_path: Path) -> None:
    rt = runtime(tmp_path / "data", tags={"cadence": "1m"})
    rt.log.append([envelope(1, 0, {"co2": 420.0}), envelope(2, 4, {"co2": 421.0})])
    drain(rt)
    assert stored(rt, "co2") == [(420.0, 0), (421.0, Quality.GAP)]  # 4 min > 3 × 1 min
    rt.close()
