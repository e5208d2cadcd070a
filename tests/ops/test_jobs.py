"""The job registry and the scheduler: schedules, queued runs, history, orphans."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sensorlake.errors import ConfigError, NotFound
from sensorlake.ops import jobs
from sensorlake.ops.jobs import JOBS, eta_seconds, get_job, next_due, register_job
from sensorlake.ops.opsdb import OpsDB
from sensorlake.ops.scheduler import Scheduler, run_now


@pytest.fixture
def db(tmp_path: Path) -> OpsDB:
    return OpsDB(tmp_path / "ops.db")


@pytest.fixture
def counted() -> list[dict]:
    calls: list[dict] = []

    def fn(ctx: jobs.JobContext) -> dict:
        calls.append(dict(ctx.params))
        ctx.progress(done=3, total=3, rows_done=7, rows_rejected=1, force=True)
        return {"ok": True}

    register_job("test-counted", fn, "every 1h", "counts its calls")
    yield calls
    JOBS.pop("test-counted", None)


def test_schedules_every_and_cron() -> None:
    now = datetime(2026, 11, 23, 14, 30, tzinfo=UTC).timestamp()
    assert next_due("every 1h", None, now) == now
    assert next_due("every 1h", now - 1800, now) == now + 1800
    assert next_due("0 3 * * *", None, now) == datetime(2026, 11, 24, 3, tzinfo=UTC).timestamp()
    with pytest.raises(ConfigError, match="not a duration"):
        next_due("every other day", None, now)
    with pytest.raises(ConfigError, match="cron"):
        next_due("at noon", None, now)
    with pytest.raises(ConfigError):
        register_job("test-bad", lambda ctx: None, "at noon")


def test_unknown_job_lists_the_valid_ones() -> None:
    with pytest.raises(NotFound, match="retention"):
        get_job("no-such-job")


def test_scheduler_runs_a_due_job_once_per_period_and_records_it(db: OpsDB,
                                                                 counted: list) -> None:
    scheduler = Scheduler(runtime=None, db=db, schedules={n: "off" for n in JOBS
                                                          if n != "test-counted"})
    now = time.time()
    assert len(scheduler.tick(now)) == 1
    deadline = time.monotonic() + 10
    while scheduler.running() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert scheduler.tick(now + 60) == []  # not due again within the hour
    assert len(counted) == 1
    run = db.runs("test-counted")[0]
    assert run["status"] == "succeeded" and run["trigger"] == "schedule"
    assert (run["done"], run["total"], run["rows_done"], run["rows_rejected"]) == (3, 3, 7, 1)
    assert run["result"] == {"ok": True}
    scheduler.stop()


def test_a_queued_run_is_picked_up_with_its_params(db: OpsDB, counted: list) -> None:
    scheduler = Scheduler(runtime=None, db=db, schedules={n: "off" for n in JOBS})
    run_id = db.create_run("test-counted", {"path": "x.csv"}, "manual")
    assert scheduler.tick() == [run_id]
    deadline = time.monotonic() + 10
    while db.run(run_id)["status"] != "succeeded" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert counted == [{"path": "x.csv"}]
    scheduler.stop()


def test_failures_are_recorded_with_their_message(db: OpsDB) -> None:
    def broken(ctx: jobs.JobContext) -> dict:
        raise ConfigError("the mapping names no column 'x': fix the mapping file")

    register_job("test-broken", broken)
    try:
        run = run_now(None, db, "test-broken")
    finally:
        JOBS.pop("test-broken")
    assert run["status"] == "failed"
    assert run["error"] == "the mapping names no column 'x': fix the mapping file"


def test_runs_of_a_dead_process_are_marked_failed(db: OpsDB) -> None:
    run_id = db.create_run("retention", {}, "schedule", status="running")
    db.execute("UPDATE runs SET pid = ? WHERE id = ?", (2**22 + 12345, run_id))
    assert db.fail_orphans() == 1
    assert "interrupted" in db.run(run_id)["error"]
    mine = db.create_run("retention", {}, "schedule", status="running")
    db.execute("UPDATE runs SET pid = ? WHERE id = ?", (os.getpid(), mine))
    assert db.fail_orphans() == 0


def test_eta_from_progress() -> None:
    run = {"status": "running", "done": 25, "total": 100, "started_at": 1000.0}
    assert eta_seconds(run, now=1010.0) == pytest.approx(30.0)
    assert eta_seconds({**run, "done": 0}, now=1010.0) is None
