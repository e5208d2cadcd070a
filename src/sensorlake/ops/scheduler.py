"""The scheduler: runs due jobs and queued runs, in-process (`sensorlake up`) or as the
`scheduler` role (`sensorlake run scheduler`).

Every `tick_seconds` it writes a heartbeat to ops.db, starts the runs that other processes
queued there (`sensorlake jobs run` while sensorlake is up), then every job whose schedule is
due. Due-ness comes from the last scheduled start stored in ops.db, so a restart after a power
cut runs an overdue job at once instead of waiting another period. A job never runs twice at
the same time; at most `max_parallel` run at once, each in its own thread. Runs left
"running" by a process that died are marked failed at start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from sensorlake.ops.jobs import (
    Job,
    JobContext,
    effective_schedule,
    execute,
    get_job,
    load_jobs,
    next_due,
)
from sensorlake.ops.opsdb import OpsDB
from sensorlake.threads import start_thread

log = logging.getLogger(__name__)

HEARTBEAT = "scheduler"
PRUNE_EVERY_SECONDS = 3600.0
KEEP_HISTORY_DAYS = 14.0
"""Finished runs and delivered alert events older than this are forgotten."""


class Scheduler:
    """Runs the registered jobs of one runtime."""

    def __init__(self, runtime: Any, db: OpsDB, schedules: dict[str, str] | None = None,
                 tick_seconds: float = 1.0, max_parallel: int = 2) -> None:
        self.runtime = runtime
        self.db = db
        self.schedules = schedules or {}
        self.tick_seconds = tick_seconds
        self._pool = ThreadPoolExecutor(max_parallel, thread_name_prefix="job")
        self._running: dict[str, tuple[Future[Any], JobContext]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._broken: set[str] = set()
        self._last_prune = 0.0
        self.on_tick: list[Callable[[], None]] = []
        """Called every tick before jobs (rate and disk sampling); must be quick."""
        self.gate: Callable[[], bool] | None = None
        """When set, a tick runs only while it answers True (the server profile's lease:
        one scheduler of a deployment runs jobs, the others wait)."""
        self.leading = True
        """Whether the last round passed the gate."""

    def start(self) -> None:
        load_jobs()
        self.db.fail_orphans()
        self._thread = start_thread(self._loop, "scheduler")

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.leading = self.gate is None or self.gate()
                if self.leading:
                    self.tick()
            except Exception:  # the scheduler must outlive any one failure
                log.exception("scheduler tick failed; continuing")
            self._stop.wait(self.tick_seconds)

    def tick(self, now: float | None = None) -> list[int]:
        """One round: heartbeat, queued runs, due jobs. Returns the run ids started."""
        now = time.time() if now is None else now
        self.db.beat(HEARTBEAT)
        for hook in self.on_tick:
            try:
                hook()
            except Exception:
                log.exception("scheduler tick hook failed")
        self._reap()
        if now - self._last_prune > PRUNE_EVERY_SECONDS:
            self._last_prune = now
            self.db.prune(KEEP_HISTORY_DAYS)
        started: list[int] = []
        while (queued := self._claim_queued()) is not None:
            started.append(queued)
        for job in load_jobs().values():
            schedule = effective_schedule(job, self.schedules)
            if schedule is None or job.name in self._running or job.name in self._broken:
                continue
            try:
                due = next_due(schedule, self.db.last_start(job.name), now)
            except Exception as exc:
                self._broken.add(job.name)
                log.error("job %s has an invalid schedule and will not run: %s", job.name, exc)
                continue
            if due <= now:
                run_id = self.db.create_run(job.name, {}, "schedule", status="running")
                self._submit(job, run_id, {})
                started.append(run_id)
        return started

    def _claim_queued(self) -> int | None:
        run = self.db.claim_queued()
        if run is None:
            return None
        try:
            job = get_job(run["job"])
        except Exception as exc:
            self.db.finish_run(run["id"], "failed", error=str(exc))
            return run["id"]
        self._submit(job, run["id"], run["params"])
        return int(run["id"])

    def _submit(self, job: Job, run_id: int, params: dict[str, Any]) -> None:
        ctx = JobContext(self.runtime, params, run_id, self.db)
        with self._lock:
            self._running[job.name] = (self._pool.submit(execute, job, ctx), ctx)

    def _reap(self) -> None:
        with self._lock:
            for name, (future, _) in list(self._running.items()):
                if future.done():
                    del self._running[name]

    def running(self) -> list[str]:
        self._reap()
        return sorted(self._running)

    def stop(self, timeout: float = 30) -> None:
        """Ask running jobs to stop at their next progress report, and wait for them."""
        self._stop.set()
        with self._lock:
            for _, ctx in self._running.values():
                ctx.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.db.clear_beat(HEARTBEAT)


def run_now(runtime: Any, db: OpsDB, name: str, params: dict[str, Any] | None = None,
            trigger: str = "manual") -> dict[str, Any]:
    """Run one job in the calling thread (CLI without a running scheduler, tests)."""
    job = get_job(name)
    run_id = db.create_run(name, params or {}, trigger, status="running")
    return execute(job, JobContext(runtime, params or {}, run_id, db))
