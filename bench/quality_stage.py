"""Cost of the quality stage per reading: 100k-reading batches against a warm key state.

    .venv/bin/python bench/quality_stage.py [--devices 2000] [--metrics 5] [--batches 5]

Each batch holds every (device, metric) key `100_000 / keys` times, one minute apart,
continuing where the previous batch stopped, so the stage reads and advances its state.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyarrow as pa

from sensorlake.config import load_settings
from sensorlake.model import TS_TYPE
from sensorlake.process.base import WORKING_SCHEMA, Batch, Context
from sensorlake.process.quality import QualityStage

METRICS = ["pm2_5", "pm10", "temperature", "humidity", "co2", "pressure", "energy"]
T0 = 1_795_435_200_000_000


def make_batch(devices: int, metrics: int, rows: int, start_step: int, seed: int) -> Batch:
    keys = devices * metrics
    steps = max(1, rows // keys)
    rng = np.random.default_rng(seed)
    device = np.tile(np.repeat(np.arange(devices), metrics), steps)
    metric = np.tile(np.tile(np.arange(metrics), devices), steps)
    step = np.repeat(np.arange(start_step, start_step + steps), keys)
    ts = pa.array(T0 + step * 60_000_000, pa.int64()).cast(TS_TYPE)
    n = len(device)
    table = pa.table({
        "tenant": pa.array(["t1"] * n),
        "device_id": pa.array([f"dev-{d:05d}" for d in device]),
        "metric": pa.array([METRICS[m] for m in metric]),
        "ts": ts, "value": pa.array(np.round(rng.normal(20, 3, n), 1)),
        "quality": pa.array(np.zeros(n, np.int16)), "received_at": ts,
        "lat": pa.nulls(n, pa.float64()), "lon": pa.nulls(n, pa.float64()),
        "msg_id": pa.array(["m"] * n),
    })
    return Batch(table.cast(WORKING_SCHEMA))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--metrics", type=int, default=5)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--state-keys", type=int, default=0,
                        help="Fill the state with this many other keys first")
    args = parser.parse_args()
    ctx = Context(load_settings(data_dir="/tmp/sensorlake-bench-quality"))
    stage = QualityStage()
    if args.state_keys:  # other devices, so the batches' keys are a part of the state
        filler = make_batch(args.state_keys // args.metrics, args.metrics, args.state_keys,
                            0, 99)
        other = pa.array(["x" + d for d in filler.readings.column("device_id").to_pylist()])
        stage.process(Batch(filler.readings.set_column(1, "device_id", other)), ctx)
        stage.commit()
    steps = max(1, args.rows // (args.devices * args.metrics))
    batches = [make_batch(args.devices, args.metrics, args.rows, i * steps, i)
               for i in range(args.batches + 1)]
    clock = time.process_time  # CPU time: the machine may be busy with other work
    start = clock()
    stage.process(batches[0], ctx)  # cold: every key new
    cold = clock() - start
    stage.commit()
    times = []
    for b in batches[1:]:
        start = clock()
        stage.process(b, ctx)
        stage.commit()
        times.append(clock() - start)
    n = batches[0].readings.num_rows
    warm = float(np.median(times))
    print(f"{n} readings, {args.devices * args.metrics} keys (+{args.state_keys} in the "
          f"state): cold {cold * 1e3:.1f} ms "
          f"({cold / n * 1e6:.2f} µs/reading), warm median {warm * 1e3:.1f} ms CPU "
          f"({warm / n * 1e6:.2f} µs/reading)")


if __name__ == "__main__":
    main()
