"""The job registry and how one run executes, recorded in ops.db.

A job is a function `fn(ctx: JobContext) -> dict | None` with a name, a default schedule and
a description, registered once:

    from sensorlake.ops.jobs import register_job
    register_job("rollup-catchup", catch_up, schedule="every 5m",
                 description="Compute the rollups the worker has not reached yet.")

Schedules: `every <duration>` (`every 1h`, `every 30s`), a five-field cron expression
(`0 3 * * *`, UTC), or None (runs only when asked: `sensorlake jobs run NAME`). The setting
`jobs.schedules` overrides a default (`"off"` disables it). Built-in jobs register the same way
(`ops/builtin.py`). A run reports progress with `ctx.progress(...)`; its start, progress, rows
done and rejected, ETA, result and error are stored and shown by `sensorlake jobs`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from croniter import croniter

from sensorlake.errors import ConfigError, NotFound, SensorlakeError
from sensorlake.ops.opsdb import OpsDB
from sensorlake.timeparse import parse_duration

log = logging.getLogger(__name__)

JobFn = Callable[["JobContext"], "dict[str, Any] | None"]


@dataclass(frozen=True)
class Job:
    name: str
    fn: JobFn
    schedule: str | None
    description: str = ""


JOBS: dict[str, Job] = {}


def register_job(name: str, fn: JobFn, schedule: str | None = None,
                 description: str = "") -> Job:
    """Register (or replace) a job; `schedule` is checked now, so a typo fails at import."""
    if schedule is not None:
        next_due(schedule, None, time.time())
    job = Job(name, fn, schedule, description or (fn.__doc__ or "").strip().split("\n")[0])
    JOBS[name] = job
    return job


def get_job(name: str) -> Job:
    load_jobs()
    try:
        return JOBS[name]
    except KeyError:
        raise NotFound(f"no job named '{name}'; jobs: {', '.join(sorted(JOBS))} "
                       "(see `sensorlake jobs list`)") from None


def load_jobs() -> dict[str, Job]:
    """Every registered job (importing the built-ins registers them)."""
    from sensorlake.ops import builtin  # noqa: F401  (registers itself)
    return JOBS


def effective_schedule(job: Job, overrides: dict[str, str]) -> str | None:
    value = overrides.get(job.name, job.schedule)
    return None if value in (None, "", "off", "manual") else value


def next_due(schedule: str, last_start: float | None, now: float) -> float:
    """When a job with this schedule is due next (epoch seconds); never run = now for
    `every`, the next cron time for cron."""
    text = schedule.strip()
    if text.startswith("every "):
        try:
            every = parse_duration(text[6:]).total_seconds()
        except SensorlakeError as exc:
            raise ConfigError(f"schedule '{schedule}': {exc}") from None
        return now if last_start is None else last_start + every
    if not croniter.is_valid(text):
        raise ConfigError(f"schedule '{schedule}' is neither 'every <duration>' (every 1h) "
                          "nor a five-field cron expression (0 3 * * *)")
    base = datetime.fromtimestamp(last_start if last_start is not None else now, UTC)
    return float(croniter(text, base).get_next(float))


class JobCancelled(SensorlakeError):
    """The run was asked to stop."""


@dataclass
class JobContext:
    """What a running job sees: the runtime, its parameters, and a way to report progress."""

    runtime: Any
    params: dict[str, Any]
    run_id: int
    db: OpsDB
    stopping: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.monotonic)
    _last_write: float = 0.0
    _state: dict[str, Any] = field(default_factory=dict)

    def progress(self, done: float | None = None, total: float | None = None,
                 rows_done: int | None = None, rows_rejected: int | None = None,
                 message: str | None = None, force: bool = False) -> None:
        """Record progress (written at most twice a second unless `force`)."""
        update = {k: v for k, v in (("done", done), ("total", total), ("rows_done", rows_done),
                                    ("rows_rejected", rows_rejected), ("message", message))
                  if v is not None}
        self._state.update(update)
        now = time.monotonic()
        if force or now - self._last_write >= 0.5:
            self._last_write = now
            self.db.progress(self.run_id, **self._state)
        if self.stopping.is_set():
            raise JobCancelled("stopped on request (shutdown)")


def execute(job: Job, ctx: JobContext) -> dict[str, Any]:
    """Run `job` now in this thread and record its outcome; returns the finished run."""
    ctx.db.start_run(ctx.run_id)
    try:
        result = job.fn(ctx) or {}
    except JobCancelled as exc:
        ctx.db.progress(ctx.run_id, **ctx._state)
        ctx.db.finish_run(ctx.run_id, "cancelled", error=str(exc))
    except SensorlakeError as exc:
        log.warning("job %s failed: %s", job.name, exc)
        ctx.db.progress(ctx.run_id, **ctx._state)
        ctx.db.finish_run(ctx.run_id, "failed", error=str(exc))
    except Exception as exc:
        log.exception("job %s crashed", job.name)
        ctx.db.progress(ctx.run_id, **ctx._state)
        ctx.db.finish_run(ctx.run_id, "failed", error=(
            f"unexpected {type(exc).__name__}: {exc} (a bug: please report it with the "
            "trace from the log of the process that ran it)"))
    else:
        ctx.db.progress(ctx.run_id, **ctx._state)
        ctx.db.finish_run(ctx.run_id, "succeeded", result=result)
    run = ctx.db.run(ctx.run_id)
    assert run is not None
    return run


def eta_seconds(run: dict[str, Any], now: float | None = None) -> float | None:
    """Seconds left at the run's average rate so far (None when unknown)."""
    done, total, started = run.get("done"), run.get("total"), run.get("started_at")
    if not done or not total or not started or run.get("status") != "running":
        return None
    elapsed = (now or time.time()) - started
    return max(0.0, elapsed / done * (total - done)) if done > 0 else None
