"""The embedded worker alone: a pre-filled log drained through the stages into DuckDB.

    python bench/worker_stages.py [--kind batch|lp|single] [--messages 5000] [--profile]

Fills the SQLite log of a fresh data folder (batch envelopes of 100 readings like
bench/ingest_embedded.py, line-protocol envelopes like bench/sources.py, or single
envelopes), then times the worker draining it with no HTTP and no load generator on the
machine: readings/s through the worker and the seconds per stage (decode, each stage, hot
store write, lake), per reading. It tells which stage bounds end-to-end ingest.
`--profile` prints cProfile's top functions of the drain as well (with the lake flush and
the rollup refresh in the worker thread, so that cProfile sees them). CPU time of all
threads per envelope is the figure to compare across changes: wall time on a shared VM
varies by +-20 % from run to run.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import append_results
from ingest_embedded import BASE, batch_bodies, single_bodies
from sensorlake.auth.tokens import Principal, Role
from sensorlake.config import LineProtocolSettings, Settings
from sensorlake.ingest.lineprotocol import scan_body
from sensorlake.log.base import Envelope
from sensorlake.registry import Device
from sensorlake.runtime import Runtime
from sources import line_batch


def envelopes(kind: str, count: int, devices: int, interval_s: float) -> list[Envelope]:
    now = int(time.time() * 1e6)
    if kind == "lp":  # `count` lines in requests of 5,000, cut into envelopes by ingest
        principal = Principal("bench", Role.INGEST, "default")
        out = []
        for start in range(0, count, 5000):
            body = line_batch(start, min(5000, count - start), devices, interval_s, count)
            out += scan_body(body, principal, LineProtocolSettings(), "ns", now,
                             "http:/api/v2/write").envelopes
        return out
    bodies = batch_bodies(count, BASE) if kind == "batch" else single_bodies(count)
    out = []
    for i, body in enumerate(bodies):
        device = orjson.loads(body)["device"]
        out.append(Envelope(f"default/{device}/bench/{i}", "default", device, "http", "envelope",
                            body, now))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kind", choices=("batch", "lp", "single"), default="batch")
    parser.add_argument("--messages", type=int, default=5000,
                        help="envelopes (batch, single) or lines (lp)")
    parser.add_argument("--devices", type=int, default=1000, help="lp: devices")
    parser.add_argument("--interval", type=float, default=1.0,
                        help="lp: seconds between a device's points")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sl-bench-worker-"))
    try:
        settings = Settings(data_dir=tmp / "data", **({"worker": {"lake_background": False},
                            "rollups": {"background": False}} if args.profile else {}))
        runtime = Runtime(settings)
        devices = ([f"d{i}" for i in range(args.devices)] if args.kind == "lp"
                   else [f"b-{i:04d}" for i in range(100)])
        runtime.registry.upsert([Device(id=d, lat=52.0, lon=5.0) for d in devices])
        todo = envelopes(args.kind, args.messages, args.devices, args.interval)
        for k in range(0, len(todo), 1000):
            runtime.log.append(todo[k:k + 1000])
        worker = runtime.worker
        profiler = cProfile.Profile() if args.profile else None
        start, cpu = time.perf_counter(), os.times()
        if profiler:
            profiler.enable()
        while worker.step(wait=0):
            pass
        worker.refresh_rollups_if_due(force=True)
        worker.flush_if_due(force=True)
        if profiler:
            profiler.disable()
        elapsed = time.perf_counter() - start
        cpu_after = os.times()
        cpu_s = cpu_after.user + cpu_after.system - cpu.user - cpu.system
        stats = worker.stats
        runtime.close()
        lake_files = list((settings.data_dir / "lake" / "readings").rglob("*.parquet"))
        lake_bytes = sum(f.stat().st_size for f in lake_files)
        rows = [("envelopes", f"{stats.messages:,} ({args.kind})"),
                ("readings stored (incl. aqi_us/aqi_uk)", f"{stats.readings:,}"),
                ("worker drain", f"{elapsed:.2f} s = {stats.readings / elapsed:,.0f} readings/s"),
                ("CPU (all threads)", f"{cpu_s:.2f} s = {cpu_s / stats.messages * 1e6:.1f} µs "
                 f"per envelope, {cpu_s / stats.readings * 1e6:.2f} µs per reading"),
                ("lake readings/", f"{lake_bytes / max(stats.readings, 1):.2f} bytes per stored "
                 f"row in {len(lake_files)} files (lake.compression_level "
                 f"{settings.lake.compression_level})")]
        for stage, seconds in stats.stage_seconds.items():
            rows.append((f"stage {stage}", f"{seconds:.2f} s = "
                         f"{seconds / max(stats.readings, 1) * 1e6:.2f} µs/reading"))
        if profiler:
            pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
        if args.no_record:
            for name, value in rows:
                print(f"{name:40} {value}")
        else:
            append_results(f"worker stages: pre-filled log drained ({args.kind})",
                           "python bench/worker_stages.py " + " ".join(sys.argv[1:]), rows)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
