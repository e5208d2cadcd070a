"""Devices, latest values and time-range queries (tenant filter always in SQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from sensorlake.api.deps import PrincipalDep, RuntimeDep
from sensorlake.auth.tokens import Action, authorize
from sensorlake.errors import AuthError, InputError, NotFound
from sensorlake.store.base import AGGREGATES, ReadingQuery
from sensorlake.timeparse import format_duration, parse_duration, parse_time

router = APIRouter(prefix="/api/v1", tags=["readings"])


def _allow(principal: Any, tenant: str, device_id: str | None = None) -> None:
    try:
        authorize(principal, Action.READ, tenant, device_id)
    except AuthError as exc:
        raise HTTPException(exc.status, str(exc)) from None


@router.get("/devices", summary="Devices of the caller's tenant")
def list_devices(runtime: RuntimeDep, principal: PrincipalDep) -> dict:
    _allow(principal, principal.tenant)
    devices = runtime.registry.list(principal.tenant)
    return {"meta": {"tenant": principal.tenant, "count": len(devices)},
            "results": [d.model_dump(exclude={"tenant"}) for d in devices]}


@router.get("/latest", summary="Newest value per device (optionally of one metric)")
def latest(runtime: RuntimeDep, principal: PrincipalDep,
           metric: Annotated[str | None, Query(description="e.g. pm2_5")] = None) -> dict:
    _allow(principal, principal.tenant)
    table = runtime.hot.latest(principal.tenant, (metric,) if metric else None)
    return {"meta": {"tenant": principal.tenant, "metric": metric, "count": table.num_rows},
            "results": _rows(table.to_pylist())}


@router.get("/devices/{device_id}/readings", summary="Readings of one device over a range",
            responses={404: {"description": "No such device in your tenant"}})
def device_readings(
    device_id: str, runtime: RuntimeDep, principal: PrincipalDep,
    metric: Annotated[list[str], Query(description="One or more metrics, e.g. pm2_5")],
    from_: Annotated[str, Query(alias="from", description="ISO 8601, epoch ms or -24h")] = "-1h",
    to: Annotated[str, Query(description="ISO 8601, epoch ms or now")] = "now",
    every: Annotated[str | None, Query(description="Bucket width: 1m, 1h, 1d")] = None,
    agg: Annotated[str, Query(description="mean, min, max, sum, count, first or last")] = "mean",
    limit: Annotated[int, Query(ge=1, le=1_000_000)] = 100_000,
) -> dict:
    _allow(principal, principal.tenant, device_id)
    try:
        runtime.registry.get(principal.tenant, device_id)
    except NotFound:
        raise HTTPException(404, f"no device '{device_id}' in your tenant") from None
    try:
        query = build_query(principal.tenant, (device_id,), metric, from_, to, every, agg, limit)
    except InputError as exc:
        raise HTTPException(422, str(exc)) from None
    table = runtime.hot.readings(query)
    results = [{"ts": r["ts"], "value": r["value"], "metric": r["metric"],
                **({"count": r["count"]} if query.every else {})}
               for r in table.to_pylist()]
    if len(query.metrics) == 1:
        for r in results:
            del r["metric"]
    return {"meta": {"device": device_id, "metrics": list(query.metrics),
                     "from": _iso(query.start), "to": _iso(query.end),
                     "every": format_duration(query.every) if query.every else None,
                     "agg": query.agg if query.every else None, "count": len(results),
                     "truncated": len(results) >= query.limit},
            "results": _rows(results)}


def build_query(tenant: str, devices: tuple[str, ...] | None, metrics: list[str], start: str,
                end: str, every: str | None, agg: str, limit: int) -> ReadingQuery:
    """The one place that turns user input into a ReadingQuery (API and CLI)."""
    if agg not in AGGREGATES:
        raise InputError(f"unknown aggregate '{agg}': use one of {', '.join(AGGREGATES)}")
    now = datetime.now(UTC)
    start_at, end_at = parse_time(start, now), parse_time(end, now)
    if end_at <= start_at:
        raise InputError(f"empty range: 'to' ({end_at.isoformat()}) must be after 'from' "
                         f"({start_at.isoformat()})")
    step: timedelta | None = parse_duration(every) if every else None
    return ReadingQuery(tenant=tenant, metrics=tuple(metrics), start=start_at, end=end_at,
                        device_ids=devices, every=step, agg=agg, limit=limit)  # type: ignore[arg-type]


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _rows(rows: list[dict]) -> list[dict]:
    for row in rows:
        for key, value in row.items():
            if isinstance(value, datetime):
                row[key] = _iso(value)
    return rows
