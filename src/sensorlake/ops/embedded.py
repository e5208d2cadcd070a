"""The operations side of one runtime: ops.db, the in-process scheduler, rate sampling.

    runtime.ops = Ops(runtime)   opens <data_dir>/ops.db
    runtime.ops.start()          the scheduler thread (when jobs.enabled), sampling each tick
    runtime.ops.close()          stops running jobs at their next progress report

Counters come from what the pipeline already keeps (WorkerStats, updated once per batch) and
from the log's stats; nothing here runs per reading.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from sensorlake.ops.opsdb import OpsDB
from sensorlake.ops.rates import RateWindow
from sensorlake.ops.scheduler import Scheduler

log = logging.getLogger(__name__)

DISK_SAMPLE_SECONDS = 60.0
DISK_KEEP_SECONDS = 2 * 86400.0


def sample_disk(db: OpsDB, data_dir: Path, last: float) -> float:
    """Record the data folder's free space in ops.db when DISK_SAMPLE_SECONDS passed since
    `last`; returns the time of the last sample."""
    now = time.time()
    if now - last < DISK_SAMPLE_SECONDS:
        return last
    usage = shutil.disk_usage(data_dir)
    db.add_disk_sample(usage.free, usage.total, DISK_KEEP_SECONDS)
    return now


class Ops:
    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.db = OpsDB(self.settings.path("ops.db"))
        self.rates = RateWindow()
        self.scheduler: Scheduler | None = None
        self._last_disk = 0.0

    def counters(self) -> dict[str, float]:
        """Cumulative counters that rates are computed from."""
        stats = self.runtime.worker.stats
        out: dict[str, float] = {
            "messages": stats.messages, "readings": stats.readings, "stored": stats.stored,
            "rejects": stats.rejects, "lake_flushes": stats.lake_flushes,
            "log_appended": self.runtime.log.stats().last_offset,
        }
        for stage, seconds in dict(stats.stage_seconds).items():
            out[f"seconds:{stage}"] = seconds
        for stage, rows in dict(stats.stage_rows).items():
            out[f"rows:{stage}"] = rows
        return out

    def worker_stats(self) -> Any:
        """The worker's counters (WorkerStats)."""
        return self.runtime.worker.stats

    def worker_alive(self) -> bool:
        return bool(self.runtime.ready())

    def current_rates(self, counters: dict[str, float]) -> tuple[dict[str, float], float]:
        """Per-second rates of `counters` over the last minute (and the seconds covered)."""
        self.rates.record(counters)
        return self.rates.rates(counters)

    def sample(self) -> None:
        """Record counters (every couple of seconds) and disk space (every minute)."""
        self.rates.record(self.counters())
        self._last_disk = sample_disk(self.db, self.settings.data_dir, self._last_disk)

    def start(self) -> None:
        jobs = self.settings.jobs
        if not jobs.enabled:
            return
        self.scheduler = Scheduler(self.runtime, self.db, jobs.schedules, jobs.tick_seconds,
                                   jobs.max_parallel)
        self.scheduler.on_tick.append(self.sample)
        self.scheduler.start()

    def scheduler_alive(self) -> bool:
        return self.scheduler is not None and self.scheduler.alive()

    def close(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()
        self.db.close()
