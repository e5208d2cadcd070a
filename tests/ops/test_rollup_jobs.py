"""The rollup jobs: `rollups` catches up dirty buckets (a stopped worker), `rollups-rebuild`
recomputes them after a device's `tz` tag changed its local days."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pyarrow as pa

from sensorlake.model import READING_SCHEMA
from sensorlake.ops.scheduler import run_now
from sensorlake.registry import Device
from sensorlake.runtime import Runtime

START = (datetime.now(UTC) - timedelta(days=2)).replace(hour=20, minute=0, second=0,
                                                       microsecond=0)


def daily(rt: Runtime) -> list[tuple[datetime, int]]:
    return [(b, int(n)) for b, n in rt.hot._writer.execute(
        "SELECT bucket, count FROM rollup_1d WHERE device_id = 'aq-1' ORDER BY bucket"
    ).fetchall()]


def test_catch_up_then_rebuild_after_a_tz_change(make_runtime: Callable[..., Runtime]) -> None:
    rt = make_runtime()
    rows = [{"tenant": "default", "device_id": "aq-1", "metric": "pm2_5",
             "ts": START + timedelta(hours=h), "value": float(h), "quality": 0,
             "received_at": START, "lat": None, "lon": None} for h in range(8)]
    rt.hot.write(pa.Table.from_pylist(rows, schema=READING_SCHEMA))  # no worker running
    run = run_now(rt, rt.ops.db, "rollups")
    assert run["status"] == "succeeded", run["error"]
    assert run["result"]["minutes"] == 8
    utc_days = daily(rt)
    assert [n for _, n in utc_days] == [4, 4]  # 20:00-23:00 and 00:00-03:00 UTC
    assert run_now(rt, rt.ops.db, "rollups")["result"]["minutes"] == 0  # nothing left
    rt.registry.upsert([Device(id="aq-1", lat=52.1, lon=5.1, tags={"tz": "Asia/Tokyo"})])
    run = run_now(rt, rt.ops.db, "rollups-rebuild")
    assert run["status"] == "succeeded", run["error"]
    tokyo = daily(rt)  # UTC 20:00..03:00 is 05:00..12:00 in Tokyo: one local day
    assert [n for _, n in tokyo] == [8]
    assert tokyo[0][0].astimezone(UTC).hour == 15  # local midnight in Tokyo is 15:00 UTC
