"""Prometheus metrics, liveness and readiness, alerts and jobs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query, Request
from starlette.responses import Response

from sensorlake.api.access import Access, AccessDep, caller
from sensorlake.api.deps import RuntimeDep, json_response
from sensorlake.errors import NotFound
from sensorlake.ops.jobs import effective_schedule, eta_seconds, get_job, load_jobs
from sensorlake.ops.prometheus import CONTENT_TYPE, exposition

router = APIRouter(tags=["operations"])


@router.get("/metrics", summary="Prometheus metrics of this process")
async def metrics(request: Request, runtime: RuntimeDep) -> Response:
    if not runtime.settings.status.metrics_public:
        Access(runtime, caller(request)).require("read_status")
    return Response(exposition(runtime), media_type=CONTENT_TYPE)


@router.get("/livez", summary="200 while the process answers (liveness)")
def livez() -> Response:
    return json_response({"status": "alive"})


@router.get("/readyz", summary="200 when every part can take work (readiness)")
def readyz(runtime: RuntimeDep) -> Response:
    stats = runtime.log.stats() if runtime.log is not None else None
    checks = {
        "worker": runtime.ops.worker_alive(),
        "log_has_room": stats is None or stats.stored_bytes < stats.max_bytes,
        "scheduler": runtime.ops.scheduler_alive() or not runtime.settings.jobs.enabled,
    }
    ready = all(checks.values())
    return json_response({"status": "ready" if ready else "not ready", "checks": checks},
                         200 if ready else 503)


@router.get("/api/v1/alerts", summary="Alert rules, their current states and recent events")
def alerts(runtime: RuntimeDep, access: AccessDep,
           limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> dict:
    access.require("read_status")
    from sensorlake.ops.alerts import alert_listing
    return alert_listing(runtime, access.tenant_id, limit)


@router.get("/api/v1/jobs", summary="Registered jobs, schedules and their last runs")
def jobs(runtime: RuntimeDep, access: AccessDep) -> dict:
    access.require("read_status")
    db = runtime.ops.db
    results = []
    for name, job in sorted(load_jobs().items()):
        last = db.last_finished(name)
        results.append({"name": name, "schedule": effective_schedule(
            job, runtime.settings.jobs.schedules), "description": job.description,
            "last_status": last["status"] if last else None,
            "last_finished_at": last["finished_at"] if last else None})
    return {"meta": {"count": len(results)}, "results": results}


@router.get("/api/v1/jobs/runs", summary="Job runs, newest first")
def job_runs(runtime: RuntimeDep, access: AccessDep,
             job: Annotated[str | None, Query(description="Only this job")] = None,
             limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> dict:
    access.require("read_status")
    runs = [_visible(r) for r in runtime.ops.db.runs(job, limit)
            if r["params"].get("tenant") in (None, access.tenant_id)]
    return {"meta": {"count": len(runs)}, "results": runs}


@router.get("/api/v1/jobs/runs/{run_id}", summary="One job run with its progress and ETA")
def job_run(run_id: int, runtime: RuntimeDep, access: AccessDep) -> dict:
    access.require("read_status")
    run = runtime.ops.db.run(run_id)
    if run is None or run["params"].get("tenant") not in (None, access.tenant_id):
        raise HTTPException(404, f"no job run {run_id}")
    return _visible(run)


@router.post("/api/v1/jobs/{name}/runs", status_code=202,
             summary="Queue a run of a job now (the scheduler starts it within a second)")
def run_job(name: str, runtime: RuntimeDep, access: AccessDep,
            params: Annotated[dict[str, Any] | None, Body()] = None) -> dict:
    access.require("run_jobs")
    try:
        get_job(name)
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    if name == "import":
        _check_import_paths(runtime, params or {})
    run_id = runtime.ops.db.create_run(name, {**(params or {}), "tenant": access.tenant_id},
                                       "manual")
    return {"id": run_id, "job": name, "status": "queued"}


def _check_import_paths(runtime: Any, params: dict[str, Any]) -> None:
    """Over HTTP, an import reads only files under <data_dir>/imports/ (never any path)."""
    root = runtime.settings.path("imports").resolve()
    for key in ("path", "mapping"):
        value = params.get(key)
        target = (root / str(value)).resolve() if value else None
        if target is None or not target.is_relative_to(root):
            raise HTTPException(403, f"over the API, '{key}' must name a file under {root} "
                                "(relative to it); copy the client's files there, or use "
                                "`sensorlake jobs import` on the machine")
        params[key] = str(target)


def _visible(run: dict[str, Any]) -> dict[str, Any]:
    return {**run, "eta_seconds": eta_seconds(run)}
