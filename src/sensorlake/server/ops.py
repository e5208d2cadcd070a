"""The operations side of a server process: the same face as `ops/embedded.py: Ops`, built
on the process board instead of one process's memory.

    runtime.ops = ServerOps(runtime)   opens <data_dir>/ops.db and the process board
    runtime.ops.start()                this process's reports; the scheduler (scheduler role,
                                       behind the PostgreSQL lease); ingest-rate sampling (api)
    runtime.ops.close()

What `ops/status.py` and `ops/prometheus.py` ask of it: `worker_stats()` (the workers'
counters summed over every report on the board), `worker_alive()` (some worker reported in
the last STALE_SECONDS), `counters()` and `current_rates()` (the workers' own rates over their
last minute, summed; the ingest rate from the stream's last sequence), `ingest_counters()`,
`scheduler_alive()` (a scheduler holding the lease reported), `db` and `rates`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from datetime import datetime
from typing import Any

from sensorlake.ops.embedded import sample_disk
from sensorlake.ops.opsdb import OpsDB
from sensorlake.ops.rates import RateWindow
from sensorlake.ops.scheduler import HEARTBEAT, Scheduler
from sensorlake.pipeline import WorkerStats
from sensorlake.server.board import REPORT_SECONDS, Board, Reporter
from sensorlake.server.lease import PgLease

log = logging.getLogger(__name__)

CACHE_SECONDS = 1.0
WORKER_COUNTERS = ("messages", "readings", "stored", "rejects", "errors", "lake_flushes")


def _summed(reports: list[dict[str, Any]], field: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for report in reports:
        for key, value in (report.get(field) or {}).items():
            out[key] = out.get(key, 0.0) + float(value)
    return out


def _latest(values: list[str | None]) -> datetime | None:
    found = [datetime.fromisoformat(v) for v in values if v]
    return max(found) if found else None


class ServerOps:
    """ops.db, the board and (scheduler role) the scheduler of one server process."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.settings = settings = runtime.settings
        self.board = Board(settings.jetstream, name=f"sensorlake-board-{os.getpid()}")
        self.db = OpsDB(settings.path("ops.db"))
        self.rates = RateWindow()
        self.scheduler: Scheduler | None = None
        self.lease: PgLease | None = None
        host = socket.gethostname()
        self.key = f"{'-'.join(sorted(runtime.roles))}.{host}.{os.getpid()}." \
                   f"{uuid.uuid4().hex[:8]}".replace("_", "-")
        self.reporter = Reporter(self.board, self.key, runtime.report)
        self._cache: tuple[float, list[dict[str, Any]]] = (0.0, [])
        self.board_error: str | None = None
        self._last_disk = 0.0
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    # -- the board ---------------------------------------------------------------------------
    def reports(self) -> list[dict[str, Any]]:
        """Every process's report (cached for a second); this process's own is fresh."""
        at, cached = self._cache
        if time.monotonic() - at > CACHE_SECONDS:
            try:
                cached = [r for r in self.board.reports() if r.get("id") != self.key]
                self.board_error = None
            except Exception as exc:
                self.board_error = f"the process board in NATS is unreadable: {exc}"
            self._cache = (time.monotonic(), cached)
        if not self.reporter.started:  # a one-off reader (`sensorlake status`)
            return cached
        own = self.reporter.report()
        own.update(age_seconds=0.0, alive=True)
        return [*cached, own]

    def workers(self, alive_only: bool = False) -> list[dict[str, Any]]:
        return [r for r in self.reports() if "worker" in r.get("roles", ())
                and (r["alive"] or not alive_only)]

    def worker_alive(self) -> bool:
        return bool(self.workers(alive_only=True))

    def worker_stats(self) -> WorkerStats:
        """The counters of every worker on the board, summed (gone ones included, so the
        totals do not drop when a worker dies)."""
        reports = self.workers()
        live = [r for r in reports if r["alive"]]
        counters = _summed(reports, "counters")
        stats = WorkerStats(**{k: int(counters.get(k, 0)) for k in WORKER_COUNTERS})
        stats.stage_seconds = {k[8:]: v for k, v in counters.items() if k.startswith("seconds:")}
        stats.stage_rows = {k[5:]: int(v) for k, v in counters.items() if k.startswith("rows:")}
        stats.last_hot_commit = _latest([(r.get("worker") or {}).get("last_hot_commit")
                                         for r in reports])
        stats.last_lake_commit = _latest([(r.get("exporter") or {}).get("last_export")
                                          for r in reports])
        errors = [r["worker"]["last_error"] for r in live if (r.get("worker") or {}).get(
            "last_error")]
        stats.last_error = errors[0] if errors else None
        return stats

    def counters(self) -> dict[str, float]:
        """Cumulative counters (the workers' sums) and the stream's last offset."""
        stats = self.worker_stats()
        out: dict[str, float] = {k: float(getattr(stats, k)) for k in WORKER_COUNTERS}
        out.update({f"seconds:{k}": v for k, v in stats.stage_seconds.items()})
        out.update({f"rows:{k}": float(v) for k, v in stats.stage_rows.items()})
        out["log_appended"] = float(self._last_offset())
        return out

    def current_rates(self, counters: dict[str, float]) -> tuple[dict[str, float], float]:
        """Per-second rates: each live worker's own over its last minute, summed; ingest
        from the stream's last offset as sampled here."""
        live = self.workers(alive_only=True)
        summed = _summed(live, "rates")
        rates = {k: summed.get(k, 0.0) for k in counters}
        self.rates.record({"log_appended": counters["log_appended"]})
        own, _ = self.rates.rates({"log_appended": counters["log_appended"]})
        rates["log_appended"] = own["log_appended"]
        window = max((float(r.get("window_seconds", 0)) for r in live), default=0.0)
        return rates, window

    def ingest_counters(self) -> list[tuple[str, str, float]]:
        """(source, kind, value) summed over every process: HTTP and MQTT ingest."""
        out = []
        for name, value in sorted(_summed(self.reports(), "counters").items()):
            source, sep, kind = name.partition(":") if name.startswith("mqtt:") else \
                name.partition("_")
            if sep and source in ("http", "mqtt"):
                out.append((source, kind, value))
        return out

    def _last_offset(self) -> int:
        log_ = self.runtime.log
        return log_.stats().last_offset if log_ is not None else 0

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self.reporter.start()
        roles, jobs = self.runtime.roles, self.settings.jobs
        if "api" in roles:
            self._sampler = threading.Thread(target=self._sample_loop, name="ingest-rate",
                                             daemon=True)
            self._sampler.start()
        if "scheduler" in roles and jobs.enabled:
            self.lease = PgLease(self.settings.postgres, "scheduler")
            self.scheduler = Scheduler(self.runtime, self.db, jobs.schedules,
                                       jobs.tick_seconds, jobs.max_parallel)
            self.scheduler.gate = self.lease.held
            self.scheduler.on_tick.append(self.sample)
            self.scheduler.start()

    def _sample_loop(self) -> None:
        while not self._stop.wait(REPORT_SECONDS):
            try:
                self.rates.record({"log_appended": float(self._last_offset())})
            except Exception as exc:  # NATS restarting; the next round samples again
                log.debug("ingest rate sample failed: %s", exc)

    def sample(self) -> None:
        """Scheduler tick (the lease holder only): disk space of the data folder a minute."""
        self._last_disk = sample_disk(self.db, self.settings.data_dir, self._last_disk)

    def leads_scheduler(self) -> bool:
        return bool(self.scheduler is not None and self.scheduler.alive()
                    and self.scheduler.leading and self.lease is not None)

    def scheduler_alive(self) -> bool:
        """Some scheduler of the deployment holds the lease and reported recently."""
        if self.leads_scheduler() or self.db.alive(HEARTBEAT):
            return True
        return any((r.get("scheduler") or {}).get("leader") for r in self.reports()
                   if r["alive"])

    def close(self) -> None:
        self._stop.set()
        if self.scheduler is not None:
            self.scheduler.stop()
        if self.lease is not None:
            self.lease.release()
        try:
            self.reporter.stop()
        finally:
            self.board.close()
            self.db.close()
