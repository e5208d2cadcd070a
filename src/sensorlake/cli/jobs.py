"""`sensorlake jobs list|run|status|history|import`, `sensorlake replay` and
`sensorlake run scheduler`.

A run goes to the scheduler of the sensorlake that runs on the data folder (queued in
ops.db; it starts within a second), or, when none runs, executes in this process with the
stores opened here (and, for an import, the worker until the log is drained). Either way the
progress bar follows the run's row in ops.db.
"""

from __future__ import annotations

import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from sensorlake.cli.common import (
    ConfigOption,
    DataDirOption,
    FormatOption,
    OutputFormat,
    TenantOption,
    console,
    err_console,
    friendly_errors,
    render,
    settings_from,
)
from sensorlake.config import Settings
from sensorlake.errors import ConfigError, InputError
from sensorlake.ops.jobs import effective_schedule, eta_seconds, get_job, load_jobs
from sensorlake.ops.opsdb import FINISHED, OpsDB
from sensorlake.ops.scheduler import HEARTBEAT
from sensorlake.runtime import server_url

app = typer.Typer(help="Scheduled jobs and imports: list, run, follow, history.",
                  no_args_is_help=True)
RUN_COLUMNS = ["id", "job", "status", "trigger", "started", "finished", "done", "total",
               "rows_done", "rows_rejected", "eta_seconds", "message", "error"]
ParamOption = Annotated[list[str] | None, typer.Option(
    "--param", "-p", help="A job parameter KEY=VALUE (repeatable).")]
WaitOption = Annotated[bool, typer.Option(
    "--wait/--no-wait", help="Follow the run with a progress bar until it ends.")]


def _ops_db(settings: Settings) -> OpsDB:
    return OpsDB(settings.path("ops.db"))


def _iso(at: float | None) -> str | None:
    return None if at is None else datetime.fromtimestamp(at, UTC).isoformat(
        timespec="seconds").replace("+00:00", "Z")


def _row(run: dict[str, Any]) -> dict[str, Any]:
    eta = eta_seconds(run)
    return {**run, "started": _iso(run["started_at"]), "finished": _iso(run["finished_at"]),
            "eta_seconds": None if eta is None else round(eta)}


def submit(settings: Settings, job: str, params: dict[str, Any], wait: bool = True,
           drain: bool = False) -> dict[str, Any]:
    """Run `job` where the data folder's scheduler runs, else here; returns the final run."""
    get_job(job)
    db = _ops_db(settings)
    try:
        if db.alive(HEARTBEAT):
            run_id = db.create_run(job, params, "manual")
            err_console.print(f"run {run_id} of {job} queued for the running scheduler")
            return follow(db, run_id) if wait else db.run(run_id) or {}
        if server_url(settings):
            raise ConfigError("sensorlake runs on this data folder without a scheduler "
                              "(jobs.enabled = false): start `sensorlake run scheduler` or "
                              "turn jobs.enabled on")
        return _run_here(settings, db, job, params, drain)
    finally:
        db.close()


def _run_here(settings: Settings, db: OpsDB, job: str, params: dict[str, Any],
              drain: bool) -> dict[str, Any]:
    """No scheduler runs on the data folder: open the stores here (without the scheduler)
    and run the job in a thread while the progress bar follows it."""
    from sensorlake.ops.jobs import JobContext, execute
    here = settings.model_copy(update={"jobs": settings.jobs.model_copy(
        update={"enabled": False})})
    if settings.profile == "server":  # the workers store what a job appends
        from sensorlake.server.runtime import ServerRuntime
        runtime: Any = ServerRuntime(here, {"scheduler"})
        drain = False
    else:
        from sensorlake.runtime import Runtime
        runtime = Runtime(here)
    outcome: dict[str, Any] = {}
    try:
        if drain:
            runtime.start_worker()
        ops_db = runtime.ops.db
        run_id = ops_db.create_run(job, params, "manual", status="running")
        ctx = JobContext(runtime, params, run_id, ops_db)
        thread = threading.Thread(target=lambda: outcome.update(execute(get_job(job), ctx)),
                                  name=f"job-{job}", daemon=True)
        thread.start()
        follow(ops_db, run_id, thread)
        thread.join()
        if drain and outcome.get("status") == "succeeded":
            _drain(runtime)
    finally:
        runtime.close()
    return outcome


def _drain(runtime: Any, timeout: float = 3600) -> None:
    """Wait until the worker processed everything in the log (the close flushes the lake)."""
    deadline = time.monotonic() + timeout
    with console.status("storing the imported readings ..."):
        while runtime.worker.cursor < runtime.log.stats().last_offset:
            if time.monotonic() > deadline:
                raise InputError("the worker did not drain the log in time; it continues "
                                 "on the next `sensorlake up`")
            time.sleep(0.1)


def follow(db: OpsDB, run_id: int, thread: threading.Thread | None = None) -> dict[str, Any]:
    """A progress bar with ETA until the run ends."""
    columns = (TextColumn("[bold]{task.fields[job]}[/bold]"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.description}"), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("", total=None, job=f"run {run_id}")
        while True:
            run = db.run(run_id)
            if run is None:
                raise InputError(f"run {run_id} disappeared from ops.db")
            progress.update(task, completed=run["done"] or 0, total=run["total"],
                            job=f"{run['job']} #{run_id}",
                            description=f"{run['rows_done']:,} rows done · "
                            f"{run['rows_rejected']:,} rejected · {run['message'] or ''}")
            if run["status"] in FINISHED:
                return run
            if thread is not None and not thread.is_alive():
                time.sleep(0.05)
                return db.run(run_id) or run
            time.sleep(0.2)


def _report(run: dict[str, Any]) -> None:
    if run.get("status") == "succeeded":
        console.print(f"[green]{run['job']} #{run['id']} succeeded[/green]: "
                      f"{run['rows_done']:,} rows done, {run['rows_rejected']:,} rejected")
        result = run.get("result") or {}
        for line in (result.get("errors") or [])[:20]:
            console.print(f"  [yellow]rejected[/yellow] {line}", highlight=False)
        if len(result.get("errors") or []) > 20:
            console.print(f"  ... see `sensorlake jobs status {run['id']} -f json` and "
                          "`sensorlake quarantine list`")
        return
    if run.get("status") in ("failed", "cancelled"):
        err_console.print(f"[red]error:[/red] {run['job']} #{run['id']} {run['status']}: "
                          f"{run['error']}")
        raise typer.Exit(1)
    console.print(f"{run.get('job')} #{run.get('id')}: {run.get('status')}")


def _params(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--param '{item}' is not KEY=VALUE")
        out[key.strip()] = value
    return out


@app.command("list")
def jobs_list(fmt: FormatOption = OutputFormat.table, data_dir: DataDirOption = None,
              config: ConfigOption = None) -> None:
    """Registered jobs, their schedule and their last run."""
    with friendly_errors():
        settings = settings_from(data_dir, config)
        db = _ops_db(settings)
        rows = []
        for name, job in sorted(load_jobs().items()):
            last = db.last_finished(name)
            rows.append({"job": name, "schedule": effective_schedule(
                job, settings.jobs.schedules) or "manual", "last_status": last and last["status"],
                "last_finished": last and _iso(last["finished_at"]),
                "description": job.description})
        db.close()
        render(rows, ["job", "schedule", "last_status", "last_finished", "description"], fmt)


@app.command("run")
def jobs_run(name: Annotated[str, typer.Argument(help="Job name (see `jobs list`).")],
             param: ParamOption = None, wait: WaitOption = True, tenant: TenantOption = None,
             data_dir: DataDirOption = None, config: ConfigOption = None) -> None:
    """Run a job now (in the running sensorlake's scheduler, or here)."""
    with friendly_errors():
        settings = settings_from(data_dir, config)
        params = {"tenant": tenant or settings.default_tenant, **_params(param)}
        run = submit(settings, name, params, wait, drain=name == "import")
    _report(run)


@app.command("import")
def jobs_import(
    path: Annotated[Path, typer.Argument(help="A .csv/.xlsx file, or a folder of them.")],
    mapping: Annotated[Path, typer.Option(help="Mapping file (YAML): columns -> device, ts, "
                                          "metrics, units, time zone.")],
    wait: WaitOption = True, tenant: TenantOption = None, data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Import a client's CSV or Excel file (or folder) through the normal pipeline."""
    with friendly_errors():
        settings = settings_from(data_dir, config)
        params = {"path": str(path.resolve()), "mapping": str(mapping.resolve()),
                  "tenant": tenant or settings.default_tenant}
        run = submit(settings, "import", params, wait, drain=True)
    _report(run)


@app.command("status")
def jobs_status(run_id: Annotated[int | None, typer.Argument(help="A run id (default: the "
                                                            "running and queued runs).")] = None,
                fmt: FormatOption = OutputFormat.table, data_dir: DataDirOption = None,
                config: ConfigOption = None) -> None:
    """Running and queued runs with progress and ETA, or one run in full."""
    with friendly_errors():
        db = _ops_db(settings_from(data_dir, config))
        runs = [db.run(run_id)] if run_id is not None else db.runs(
            statuses=("running", "queued"), limit=100)
        db.close()
        if run_id is not None and runs[0] is None:
            raise InputError(f"no run {run_id}: see `sensorlake jobs history`")
        columns = RUN_COLUMNS + (["params", "result"] if fmt is not OutputFormat.table else [])
        render([_row(r) for r in runs if r], columns, fmt, title="runs")


@app.command("history")
def jobs_history(job: Annotated[str | None, typer.Option(help="Only this job.")] = None,
                 limit: Annotated[int, typer.Option(help="Most runs shown.")] = 20,
                 fmt: FormatOption = OutputFormat.table, data_dir: DataDirOption = None,
                 config: ConfigOption = None) -> None:
    """Past runs, newest first: start, end, rows done and rejected, result or error."""
    with friendly_errors():
        db = _ops_db(settings_from(data_dir, config))
        runs = db.runs(job, limit)
        db.close()
        columns = RUN_COLUMNS + (["params", "result"] if fmt is not OutputFormat.table else [])
        render([_row(r) for r in runs], columns, fmt, title=f"{len(runs)} runs")


def replay(
    from_: Annotated[str, typer.Option("--from", help="Start: envelopes that arrived from "
                                       "here (ISO 8601, epoch ms, -24h).")],
    to: Annotated[str, typer.Option(help="End (excluded), same forms.")] = "now",
    device: Annotated[str | None, typer.Option(help="Only this device.")] = None,
    tenant: TenantOption = None, wait: WaitOption = True, data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Rebuild readings and what derives from them from the lake's raw/ (after a codec,
    calibration or formula fix); running it twice changes nothing."""
    with friendly_errors():
        settings = settings_from(data_dir, config)
        params = {"from": from_, "to": to, "device": device,
                  "tenant": tenant or settings.default_tenant}
        run = submit(settings, "replay", {k: v for k, v in params.items() if v is not None},
                     wait)
    _report(run)


def run_scheduler(
    seconds: Annotated[float, typer.Option(help="Stop by itself after this many seconds "
                                           "(0 = until Ctrl-C or SIGTERM).", min=0)] = 0,
    data_dir: DataDirOption = None, config: ConfigOption = None,
) -> None:
    """Run the scheduler role alone: retention, compaction, alerts, imports and the jobs of
    plugins (when `sensorlake up` runs with jobs.enabled = false, or in server mode, where
    one scheduler of the deployment runs jobs at a time and others wait for its lease)."""
    from sensorlake.runtime import Runtime
    with friendly_errors():
        settings = settings_from(data_dir, config)
        if settings.profile == "server":
            from sensorlake.cli.roles import serve_roles
            enabled = settings.model_copy(update={"jobs": settings.jobs.model_copy(
                update={"enabled": True})})
            serve_roles(enabled, {"scheduler"}, None, None, seconds=seconds)
            return
        if server_url(settings):
            raise ConfigError(f"sensorlake up already runs on {settings.data_dir} and, in "
                              "embedded mode, holds its stores: it runs the scheduler itself "
                              "(jobs.enabled)")
        runtime = Runtime(settings.model_copy(update={"jobs": settings.jobs.model_copy(
            update={"enabled": True})}))
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    runtime.ops.start()
    console.print(f"scheduler running on {settings.data_dir.resolve()}; Ctrl-C stops it")
    try:
        stop.wait(seconds or None)
    finally:
        runtime.close()
