"""Energy maths throughput: counter deltas, local-day buckets and the tariff price lookup over
N synthetic readings (1,000 devices, 15-minute counters, two zones), one polars thread by
default like the CLI. Prints readings per second; nothing is written.

    .venv/bin/python bench/energy.py [--readings 1000000]
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

os.environ.setdefault("POLARS_MAX_THREADS", "1")

import numpy as np
import polars as pl

from sensorlake.energy import bucket_sums, device_deltas
from sensorlake.tariffs import parse_tariffs, prices

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "tariffs.yaml"


def readings(total: int, devices: int = 1000) -> pl.DataFrame:
    per = max(2, total // devices)
    start = datetime(2026, 3, 20, tzinfo=UTC)
    stamps = pl.datetime_range(start, start + timedelta(minutes=15 * (per - 1)), "15m",
                               eager=True, time_zone="UTC")
    rng = np.random.default_rng(1)
    return pl.DataFrame({
        "device_id": np.repeat([f"d{i}" for i in range(devices)], per),
        "metric": "energy", "ts": pl.concat([stamps] * devices),
        "value": np.cumsum(rng.random((devices, per)), axis=1).ravel()})


def timed(label: str, rows: int, run) -> object:  # type: ignore[no-untyped-def]
    began = time.perf_counter()
    out = run()
    seconds = time.perf_counter() - began
    print(f"{label:<28} {rows / seconds / 1e6:6.2f} M readings/s ({seconds:.2f} s)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--readings", type=int, default=1_000_000)
    args = parser.parse_args()
    frame = readings(args.readings)
    rows = frame.height
    zones = {f"d{i}": "Europe/London" if i % 2 else "America/New_York" for i in range(1000)}
    deltas = timed("counter deltas", rows,
                   lambda: device_deltas(frame, timedelta(minutes=65)))
    assert isinstance(deltas, pl.DataFrame)
    timed("daily buckets (local days)", rows,
          lambda: bucket_sums(deltas, timedelta(days=1), zones))
    book = parse_tariffs(EXAMPLE.read_text(encoding="utf-8"))
    lookup = deltas.select("ts", "device_id").with_columns(
        tz=pl.col("device_id").replace_strict(zones), tariff=pl.lit("business-tou"))
    timed("price lookup (ToU, 2 zones)", rows, lambda: prices(book, lookup))


if __name__ == "__main__":
    main()
