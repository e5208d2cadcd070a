"""Health, status, the quarantine, and the catalog the dashboard reads."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.responses import Response

from sensorlake import __version__
from sensorlake.api.access import AccessDep
from sensorlake.api.deps import RuntimeDep, json_response
from sensorlake.api.routes.readings import ERRORS, iso_rows
from sensorlake.aqi import UK_DAQI_BANDS, US_EPA_CATEGORIES
from sensorlake.model import METRICS

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="200 when ingest, worker and stores are ready")
def healthz(runtime: RuntimeDep) -> Response:
    ready = runtime.ready()
    return json_response({"status": "ok" if ready else "starting"}, 200 if ready else 503)


@router.get("/api/v1/status", summary="Health in plain words: rates, backlog and ETA, "
            "sinks, quarantine, disk, silent devices, alerts, jobs", responses=ERRORS)
def status(runtime: RuntimeDep, access: AccessDep) -> dict:
    access.require("read_status")
    from sensorlake.ops.status import build_status
    return build_status(runtime, access.tenant_id)


@router.get("/api/v1/quarantine", summary="Rejected input with its reason and source",
            responses=ERRORS)
def quarantine(runtime: RuntimeDep, access: AccessDep,
               limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> dict:
    access.require("read_quarantine")
    table = runtime.quarantine.list(access.tenant_id, limit=limit)
    rows = table.drop_columns(["payload"]).to_pylist()
    payloads = table.column("payload").to_pylist()
    for row, payload in zip(rows, payloads, strict=True):
        row["payload"] = payload.decode("utf-8", "replace")[:2000] if payload else None
    return {"meta": {"tenant": access.tenant_id, "count": len(rows)},
            "results": iso_rows(rows)}


@router.get("/api/v1/catalog", summary="Metrics, AQI scales and dashboard settings (public)",
            openapi_extra={"security": []})
def catalog(runtime: RuntimeDep) -> dict[str, Any]:
    settings = runtime.settings
    low = 0
    us = []
    for top, name, colour in US_EPA_CATEGORIES:
        us.append({"from": low, "to": top, "name": name, "colour": colour})
        low = top + 1
    return {
        "version": __version__,
        "metrics": [{"name": m.name, "unit": m.unit, "kind": m.kind.value,
                     "description": m.description, "derived": m.derived}
                    for m in METRICS.values()],
        "aqi": {"aqi_us": us, "aqi_uk": [{"from": i, "to": i, "name": band, "colour": colour}
                                         for i, band, colour in UK_DAQI_BANDS]},
        "dashboard": {"title": settings.dashboard.title,
                      "tile_url": settings.dashboard.tile_url,
                      "public": settings.api.public_tenant is not None},
    }
