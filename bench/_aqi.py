"""AQI over N readings, in memory: the derived series (NowCast, DAQI, daily AQI) on N hourly
means, their numpy kernels, and the per-reading AqiStage on N raw readings.

    from _aqi import bench_aqi; bench_aqi(10_000_000)

`python bench/_aqi.py --readings 1000000` prints the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from sensorlake.aqi_nowcast import nowcast, running_mean
from sensorlake.config import Settings
from sensorlake.derived.air import daily_series, daqi_series, nowcast_series
from sensorlake.derived.base import DerivedRequest
from sensorlake.model import TS_TYPE
from sensorlake.process.aqi import AqiStage
from sensorlake.process.base import WORKING_SCHEMA, Batch, Context
from sensorlake.store.base import SERIES_SCHEMA, ReadingQuery

START = datetime(2026, 11, 1, tzinfo=UTC)
HOURS = 24 * 30
"""Each device gets 30 days of hourly means of pm2_5 and pm10."""
ZONES = ("UTC", "Europe/London", "America/New_York", "Asia/Tokyo")


def _strings(names: list[str], codes: np.ndarray) -> pa.Array:
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)),
                                          pa.array(names)).cast(pa.string())


def hourly_means(readings: int, seed: int = 7) -> tuple[pa.Table, list[str]]:
    """About `readings` rows of SERIES_SCHEMA hourly means (2 pollutants x HOURS x devices),
    log-normal concentrations, 3 % of the hours missing."""
    rng = np.random.default_rng(seed)
    devices = max(1, readings // (2 * HOURS))
    ids = [f"aq-{i:06d}" for i in range(devices)]
    device = np.repeat(np.arange(devices), 2 * HOURS)
    metric = np.tile(np.repeat([0, 1], HOURS), devices)
    hour = np.tile(np.arange(HOURS), 2 * devices)
    keep = rng.random(device.size) >= 0.03
    device, metric, hour = device[keep], metric[keep], hour[keep]
    value = np.round(rng.lognormal(2.5, 0.8, device.size) * np.where(metric == 1, 1.8, 1), 1)
    us0 = (START - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    table = pa.table({
        "device_id": _strings(ids, device), "metric": _strings(["pm2_5", "pm10"], metric),
        "ts": pa.array(us0 + hour * 3_600_000_000, pa.int64()).cast(TS_TYPE),
        "value": pa.array(value), "count": pa.array(np.full(device.size, 4, np.int64))})
    return table.cast(SERIES_SCHEMA), ids


def raw_readings(readings: int, seed: int = 7) -> pa.Table:
    """`readings` WORKING_SCHEMA rows: pm2_5 and pm10 pairs every minute over 1,000 devices."""
    rng = np.random.default_rng(seed)
    pairs = max(1, readings // 2)
    devices = min(1000, pairs)
    device = np.repeat(np.arange(pairs) % devices, 2)
    minute = np.repeat(np.arange(pairs) // devices, 2)
    us0 = (START - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    ts = pa.array(us0 + minute * 60_000_000, pa.int64()).cast(TS_TYPE)
    n = device.size
    return pa.table({
        "tenant": _strings(["bench"], np.zeros(n)),
        "device_id": _strings([f"aq-{i:06d}" for i in range(devices)], device),
        "metric": _strings(["pm2_5", "pm10"], np.tile([0, 1], pairs)), "ts": ts,
        "value": pa.array(np.round(rng.lognormal(2.5, 0.8, n), 1)),
        "quality": pa.array(np.zeros(n, np.int16)).cast(WORKING_SCHEMA.field("quality").type),
        "received_at": ts, "lat": pa.array(np.full(n, 52.1)), "lon": pa.array(np.full(n, 5.1)),
        "msg_id": _strings(["m"], np.zeros(n))}).cast(WORKING_SCHEMA)


def _timed(run: Callable[[], Any]) -> tuple[float, Any]:
    began = time.perf_counter()
    out = run()
    return time.perf_counter() - began, out


def bench_aqi(readings: int) -> dict[str, Any]:
    """Seconds and rows/s of each AQI computation over about `readings` rows."""
    table, ids = hourly_means(readings)
    rows = table.num_rows

    def read(_query: ReadingQuery) -> pa.Table:
        return table

    request = DerivedRequest(
        tenant="bench", device_ids=tuple(ids), start=START, end=START + timedelta(hours=HOURS),
        every=None, read=read, settings=Settings(),
        timezone_of=lambda d: ZONES[int(d[3:]) % len(ZONES)])
    figures: dict[str, Any] = {"hourly_means": rows, "devices": len(ids), "hours": HOURS}
    for name, compute in (("aqi_us_nowcast", nowcast_series), ("aqi_uk_daqi", daqi_series),
                          ("aqi_us_daily", daily_series)):
        seconds, out = _timed(lambda compute=compute: compute(request))
        figures[name] = {"seconds": round(seconds, 3), "rows_out": out.num_rows,
                         "hourly_means_per_s": round(rows / seconds)}
    matrix = np.random.default_rng(1).lognormal(2.5, 0.8, (2 * len(ids), HOURS))
    for name, kernel in (("nowcast_kernel", nowcast),
                         ("running_mean_kernel", lambda m: running_mean(m, 18))):
        seconds, _ = _timed(lambda kernel=kernel: kernel(matrix))
        figures[name] = {"seconds": round(seconds, 3),
                         "hours_per_s": round(matrix.size / seconds)}
    raw = raw_readings(readings)
    stage, ctx = AqiStage(), Context(settings=Settings())
    seconds, out = _timed(lambda: stage.process(Batch(raw), ctx))
    figures["aqi_stage"] = {"readings": raw.num_rows, "seconds": round(seconds, 3),
                            "readings_per_s": round(raw.num_rows / seconds),
                            "rows_added": out.readings.num_rows - raw.num_rows}
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=1_000_000)
    print(json.dumps(bench_aqi(parser.parse_args().readings), indent=2))
