"""Health, status and the quarantine."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from sensorlake.api.deps import PrincipalDep, RuntimeDep, json_response
from sensorlake.api.routes.readings import _allow, _rows

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="200 when ingest, worker and stores are ready")
def healthz(runtime: RuntimeDep) -> Response:
    ready = runtime.ready()
    return json_response({"status": "ok" if ready else "starting"}, 200 if ready else 503)


@router.get("/api/v1/status", summary="Health in plain words: rates, backlog and ETA, "
            "sinks, quarantine, disk, silent devices, alerts, jobs")
def status(runtime: RuntimeDep, principal: PrincipalDep) -> dict:
    _allow(principal, principal.tenant)
    from sensorlake.ops.status import build_status
    return build_status(runtime, principal.tenant)


@router.get("/api/v1/quarantine", summary="Rejected input with its reason and source")
def quarantine(runtime: RuntimeDep, principal: PrincipalDep,
               limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> dict:
    _allow(principal, principal.tenant)
    table = runtime.quarantine.list(principal.tenant, limit=limit)
    rows = table.drop_columns(["payload"]).to_pylist()
    payloads = table.column("payload").to_pylist()
    for row, payload in zip(rows, payloads, strict=True):
        row["payload"] = payload.decode("utf-8", "replace")[:2000] if payload else None
    return {"meta": {"tenant": principal.tenant, "count": len(rows)}, "results": _rows(rows)}
