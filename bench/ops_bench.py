"""Operations throughput, embedded mode: ETL import, replay, status, alerts, compaction.

    python bench/ops_bench.py [--rows 200000] [--devices 100]

On a fresh data folder: imports a CSV of `rows` rows x 3 metrics (the import job: read, map,
validate, append to the log), lets the worker store it (readings/s), builds the status
document and evaluates a threshold rule over every device (ms each), replays everything from
raw/ (envelopes/s and readings/s, twice: the second run changes nothing), and compacts the
lake. Prints the figures and appends them to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import append_results
from sensorlake.config import load_settings
from sensorlake.ops.alerts import evaluate_all
from sensorlake.ops.compact import compact
from sensorlake.ops.scheduler import run_now
from sensorlake.ops.status import build_status
from sensorlake.registry import Device
from sensorlake.runtime import Runtime


def write_csv(path: Path, rows: int, devices: int, start: datetime) -> None:
    with path.open("w") as f:
        f.write("device,time,pm25,pm10,temp\n")
        for i in range(rows):
            at = start + timedelta(seconds=60 * (i // devices))
            f.write(f"b-{i % devices:04d},{at:%Y-%m-%d %H:%M:%S},{5 + i % 40 * 0.5:.1f},"
                    f"{9 + i % 30:.1f},{10 + i % 20 * 0.25:.2f}\n")


def drain(rt: Runtime) -> None:
    while rt.worker.cursor < rt.log.stats().last_offset:
        rt.worker.step(wait=0.01)
    rt.worker.flush_if_due(force=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--devices", type=int, default=100)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sensorlake-opsbench-"))
    try:
        settings = load_settings(data_dir=root / "data", jobs={"enabled": False},
                                 worker={"lake_flush_seconds": 3600, "linger_seconds": 0},
                                 alerts={"rules": [{"name": "pm", "kind": "threshold",
                                                    "metric": "pm2_5", "above": 35.4,
                                                    "window": "10m"}]})
        rt = Runtime(settings)
        rt.registry.upsert([Device(id=f"b-{d:04d}") for d in range(args.devices)])
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(
            minutes=args.rows // args.devices + 5)
        csv = root / "client.csv"
        write_csv(csv, args.rows, args.devices, start)
        mapping = root / "mapping.yaml"
        mapping.write_text("device: device\nts: time\nmetrics: {pm25: pm2_5, pm10: pm10, "
                           "temp: temperature}\n")
        t = time.perf_counter()
        run = run_now(rt, rt.ops.db, "import", {"path": str(csv), "mapping": str(mapping)})
        import_s = time.perf_counter() - t
        assert run["status"] == "succeeded", run["error"]
        t = time.perf_counter()
        drain(rt)
        store_s = time.perf_counter() - t
        readings = rt.hot.count()
        t = time.perf_counter()
        build_status(rt, "default")
        status_ms = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        evaluate_all(settings, rt.hot, rt.ops.db)
        alert_ms = (time.perf_counter() - t) * 1000
        replay = {"from": (datetime.now(UTC) - timedelta(hours=1)).isoformat(), "to": "now"}
        t = time.perf_counter()
        first = run_now(rt, rt.ops.db, "replay", replay)
        replay_s = time.perf_counter() - t
        t = time.perf_counter()
        second = run_now(rt, rt.ops.db, "replay", replay)
        replay2_s = time.perf_counter() - t
        envelopes = first["result"]["envelopes"]
        t = time.perf_counter()
        compacted = compact(rt.lake, rt.log.position("worker"), min_age_seconds=0)
        compact_s = time.perf_counter() - t
        rt.close()
        append_results("ops (embedded)", f"python bench/ops_bench.py --rows {args.rows} "
                       f"--devices {args.devices}", [
                           ("import job (read, map, validate, append)",
                            f"{args.rows / import_s:,.0f} rows/s ({import_s:.1f} s)"),
                           ("worker storing the import", f"{readings / store_s:,.0f} readings/s"),
                           ("status document", f"{status_ms:,.0f} ms ({readings:,} readings)"),
                           ("threshold rule over all devices", f"{alert_ms:,.0f} ms"),
                           ("replay", f"{envelopes / replay_s:,.0f} envelopes/s, "
                            f"{first['result']['readings_after'] / replay_s:,.0f} readings/s"),
                           ("replay again (no change)", f"{replay2_s:.1f} s, "
                            f"{second['result']['lake_partitions_rewritten']} partitions "
                            "rewritten"),
                           ("compaction", f"{compacted.files_in} files -> "
                            f"{compacted.files_out} in {compact_s:.2f} s"),
                       ])
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
