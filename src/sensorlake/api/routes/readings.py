"""Time-range queries: one device, or every device the caller may read (scope in SQL)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import polars as pl
import pyarrow as pa
from fastapi import APIRouter, Depends, HTTPException, Query
from starlette.responses import Response

from sensorlake.api.access import Access, AccessDep
from sensorlake.api.deps import RuntimeDep, json_response
from sensorlake.api.encode import frame, iso_columns, rows_json
from sensorlake.api.ranges import RangeParams, RangePlan, build_query, encode_cursor, plan_range
from sensorlake.derived.base import SERIES_COLUMNS
from sensorlake.derived.serve import read_with_derived
from sensorlake.errors import ConfigError, InputError, QueryTimeout
from sensorlake.model import QUALITY_FLAGS
from sensorlake.timeparse import format_duration

__all__ = ["build_query", "router"]

router = APIRouter(prefix="/api/v1", tags=["readings"])
RangeDep = Annotated[RangeParams, Depends()]

READINGS_EXAMPLE = {
    "meta": {"device": "aq-0001", "metrics": ["pm2_5"], "from": "2026-11-23T10:00:00Z",
             "to": "2026-11-23T12:00:00Z", "every": "1h", "agg": "max", "count": 2,
             "truncated": False, "next": None, "source": "raw"},
    "results": [{"ts": "2026-11-23T10:00:00Z", "value": 9.7, "count": 4},
                {"ts": "2026-11-23T11:00:00Z", "value": 14.9, "count": 6}]}
ERRORS = {401: {"description": "Missing or invalid token"},
          403: {"description": "The policies do not allow this"},
          404: {"description": "No such device in your tenant"},
          422: {"description": "Bad parameter, or over the point cap: the message says which "
                "`every` fits"},
          429: {"description": "Over the token's rate limit (see Retry-After)"},
          504: {"description": "The query ran past api.query_timeout_seconds"}}


def requested_devices(access: Access, devices: list[str] | None,
                      action: str) -> tuple[str, ...] | None:
    """The devices a multi-device route reads: the caller's scope, cut to `devices` when
    given; an asked-for device outside it is 404 (other tenant) or 403 (not allowed)."""
    if not devices:
        return access.tenant(action).device_ids
    known = access.runtime.registry.uids(access.tenant_id)
    for device_id in devices:
        if device_id not in known:
            raise HTTPException(404, f"no device '{device_id}' in your tenant")
    scope = access.tenant(action)
    for device_id in devices:
        if not scope.allows(device_id):
            raise access._deny(action, f"device '{device_id}'")
    return tuple(dict.fromkeys(devices))


def run_range(runtime: Any, tenant: str, devices: tuple[str, ...] | None,
              params: RangeParams) -> tuple[RangePlan, pa.Table]:
    settings = runtime.settings.api
    count = len(devices) if devices is not None else max(1, len(runtime.registry.uids(tenant)))
    try:
        plan = plan_range(tenant, devices, params, settings.max_points, settings.auto_points,
                          count, rollups=getattr(runtime.hot, "rollups", None) is not None)
        table = read_plan(runtime, plan, settings.query_timeout_seconds)
    except (InputError, ConfigError) as exc:
        raise HTTPException(422, str(exc)) from None
    except QueryTimeout as exc:
        raise HTTPException(504, str(exc)) from None
    return plan, table


def read_plan(runtime: Any, plan: RangePlan, timeout: float) -> pa.Table:
    """Stored metrics from the hot store, derived ones (NowCast, cost ...) computed on read."""
    return read_with_derived(runtime, plan.query, timeout)


def extra_columns(table: pa.Table) -> list[str]:
    """Columns a derived series adds (category, colour, status ...), in table order."""
    return [c for c in table.column_names if c not in SERIES_COLUMNS.names]


def flag_columns(plan: RangePlan, table: pa.Table) -> list[str]:
    """`flags` (the names of the quality bits) when include=quality asked for them."""
    return ["flags"] if plan.query.with_quality and "quality" in table.column_names else []


def with_flag_names(data: pl.DataFrame, plan: RangePlan) -> pl.DataFrame:
    """Adds `flags`: the names of each row's quality bits, lowest first (`[]` for none,
    null where a derived series has no quality). Vectorized: one expression per bit."""
    if not plan.query.with_quality or "quality" not in data.columns:
        return data
    quality = pl.col("quality").cast(pl.Int32)
    names = pl.concat_list([
        pl.when((quality & bit) != 0).then(pl.lit(name)).otherwise(pl.lit(None, pl.String))
        for name, bit in QUALITY_FLAGS.items()]).list.drop_nulls()
    return data.with_columns(flags=pl.when(quality.is_not_null()).then(names))


def meta(plan: RangePlan, table: pa.Table) -> dict[str, Any]:
    query = plan.query
    truncated = table.num_rows >= query.limit
    last = table.slice(table.num_rows - 1).to_pylist()[0] if table.num_rows else None
    return {"metrics": list(query.metrics), "from": iso(query.start), "to": iso(query.end),
            "every": ("1mo" if query.calendar == "month" else format_duration(query.every))
            if query.every else None,
            "agg": query.agg if query.every else None, "count": table.num_rows,
            "truncated": truncated, "source": plan.source,
            "next": encode_cursor(last["device_id"], last["metric"], last["ts"])
            if truncated and last else None}


@router.get("/devices/{device_id}/readings", summary="Readings of one device over a range",
            responses={200: {"content": {"application/json": {"example": READINGS_EXAMPLE}}},
                       **ERRORS})
def device_readings(device_id: str, runtime: RuntimeDep, access: AccessDep,
                    params: RangeDep) -> Response:
    access.device(device_id, "read_readings")
    plan, table = run_range(runtime, access.tenant_id, (device_id,), params)
    columns = ["ts", "value", *(["metric"] if len(plan.query.metrics) > 1 else []),
               *(["count"] if plan.query.every else []), *extra_columns(table),
               *flag_columns(plan, table)]
    rows = iso_columns(with_flag_names(frame(table), plan).select(columns))
    return json_response({"meta": {"device": device_id, **meta(plan, table)},
                          "results": rows_json(rows)})


@router.get("/readings", summary="Readings of several devices (all you may read by default)",
            responses=ERRORS)
def readings(runtime: RuntimeDep, access: AccessDep, params: RangeDep,
             device: Annotated[list[str] | None, Query(
                 description="Only these devices (repeatable)")] = None) -> Response:
    devices = requested_devices(access, device, "read_readings")
    plan, table = run_range(runtime, access.tenant_id, devices, params)
    columns = ["device_id", "metric", "ts", "value", *(["count"] if plan.query.every else []),
               *extra_columns(table), *flag_columns(plan, table)]
    rows = iso_columns(with_flag_names(frame(table), plan).select(columns))
    return json_response({"meta": meta(plan, table), "results": rows_json(rows)})


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def iso_rows(rows: list[dict]) -> list[dict]:
    for row in rows:
        for key, value in row.items():
            if isinstance(value, datetime):
                row[key] = iso(value)
    return rows


_rows = iso_rows  # the name other routers used
