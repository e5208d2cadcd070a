"""Latest values with AQI category and colour, and the GeoJSON map layer."""

from __future__ import annotations

import time
from typing import Annotated, Any

import polars as pl
from fastapi import APIRouter, HTTPException, Query
from starlette.responses import Response

from sensorlake.api.access import AccessDep
from sensorlake.api.deps import RuntimeDep, json_response
from sensorlake.api.encode import ISO, frame, iso_columns, rows_json, with_aqi
from sensorlake.api.routes.readings import ERRORS, requested_devices
from sensorlake.aqi import uk_daqi_band, us_epa_category

router = APIRouter(prefix="/api/v1", tags=["latest"])

LATEST_EXAMPLE = {
    "meta": {"tenant": "default", "metric": "aqi_us", "count": 1},
    "results": [{"device_id": "aq-0001", "metric": "aqi_us", "ts": "2026-11-23T11:04:20Z",
                 "value": 57.0, "lat": 52.09, "lon": 5.12, "category": "Moderate",
                 "colour": "#FFFF00"}]}
MAP_EXAMPLE = {
    "type": "FeatureCollection",
    "meta": {"tenant": "default", "metric": "aqi_us", "count": 1, "without_location": 0},
    "features": [{"type": "Feature", "id": "aq-0001",
                  "geometry": {"type": "Point", "coordinates": [5.12, 52.09]},
                  "properties": {"device_id": "aq-0001", "name": "Station 1",
                                 "type": "air_quality", "ts": "2026-11-23T11:04:20Z",
                                 "age_seconds": 4.2, "value": 57.0, "category": "Moderate",
                                 "colour": "#FFFF00",
                                 "values": {"pm2_5": 14.1, "pm10": 22.6, "aqi_us": 57.0}}}]}
NO_DATA_COLOUR = "#9E9E9E"


def aqi_fields(metric: str, value: float | None) -> dict[str, str]:
    """The category and its official colour for an AQI value (empty for other metrics)."""
    if value is None or value != value or value < 0:
        return {}
    if metric == "aqi_us":
        name, colour = us_epa_category(round(value))
        return {"category": name, "colour": colour}
    if metric == "aqi_uk" and 1 <= round(value) <= 10:
        band, colour = uk_daqi_band(round(value))
        return {"category": band, "colour": colour}
    return {}


@router.get("/latest", summary="Newest value per device and metric, with AQI category",
            responses={200: {"content": {"application/json": {"example": LATEST_EXAMPLE}}},
                       **ERRORS})
def latest(runtime: RuntimeDep, access: AccessDep,
           metric: Annotated[str | None, Query(description="e.g. pm2_5",
                                               examples=["aqi_us"])] = None,
           device: Annotated[list[str] | None, Query(
               description="Only these devices (repeatable)")] = None) -> Response:
    devices = requested_devices(access, device, "read_latest")
    table = runtime.hot.latest(access.tenant_id, (metric,) if metric else None, devices)
    rows = iso_columns(with_aqi(frame(table)))
    return json_response({"meta": {"tenant": access.tenant_id, "metric": metric,
                                   "count": rows.height}, "results": rows_json(rows)})


def parse_bbox(text: str | None) -> tuple[float, float, float, float] | None:
    if not text:
        return None
    try:
        west, south, east, north = (float(v) for v in text.split(","))
    except ValueError:
        raise HTTPException(422, f"bbox '{text}' must be west,south,east,north in degrees "
                            "(e.g. 4.9,52.0,5.3,52.2)") from None
    if not (-180 <= west <= 180 and -180 <= east <= 180 and -90 <= south <= north <= 90):
        raise HTTPException(422, f"bbox '{text}': longitudes -180..180, latitudes -90..90, "
                            "south <= north")
    return west, south, east, north


def inside(bbox: tuple[float, float, float, float] | None, lon: float, lat: float) -> bool:
    if bbox is None:
        return True
    west, south, east, north = bbox
    in_lon = west <= lon <= east if west <= east else (lon >= west or lon <= east)
    return in_lon and south <= lat <= north


@router.get("/map", summary="GeoJSON: each device's location and latest values",
            responses={200: {"content": {"application/geo+json": {"example": MAP_EXAMPLE}}},
                       **ERRORS})
def map_layer(runtime: RuntimeDep, access: AccessDep,
              metric: Annotated[str, Query(description="The value that colours a device",
                                           examples=["aqi_us"])] = "aqi_us",
              bbox: Annotated[str | None, Query(
                  description="west,south,east,north (degrees)",
                  examples=["4.9,52.0,5.3,52.2"])] = None) -> Response:
    box = parse_bbox(bbox)
    scope = access.tenant("read_map")
    tenant = access.tenant_id
    devices = {r[0]: r[1:] for r in runtime.catalog.execute(
        "SELECT id, name, type, lat, lon FROM devices WHERE tenant=?", (tenant,))
        if scope.allows(r[0])}
    per_device = _latest_per_device(runtime.hot.latest(tenant, None, scope.device_ids))
    now = time.time()
    features, unplaced = [], 0
    for device_id in sorted(set(devices) | set(per_device)):
        name, kind, static_lat, static_lon = devices.get(device_id, ("", "", None, None))
        entry = per_device.get(device_id, {})
        lat = entry.get("lat") if entry.get("lat") is not None else static_lat
        lon = entry.get("lon") if entry.get("lon") is not None else static_lon
        if lat is None or lon is None:
            unplaced += 1
            continue
        if not inside(box, lon, lat):
            continue
        epoch: float | None = entry.get("epoch")
        values = entry.get("values", {})
        value = values.get(metric)
        features.append({"type": "Feature", "id": device_id,
                         "geometry": {"type": "Point", "coordinates": [lon, lat]},
                         "properties": {
                             "device_id": device_id, "name": name, "type": kind,
                             "ts": entry.get("ts"),
                             "age_seconds": round(now - epoch, 1) if epoch else None,
                             "value": value,
                             **({"colour": NO_DATA_COLOUR} | aqi_fields(metric, value)),
                             "values": values}})
    return json_response({"type": "FeatureCollection",
                          "meta": {"tenant": tenant, "metric": metric, "count": len(features),
                                   "without_location": unplaced},
                          "features": features})


def _latest_per_device(table: Any) -> dict[str, dict[str, Any]]:
    """device -> {ts (newest, ISO), epoch, lat/lon (of the newest row that has them), values}."""
    if table.num_rows == 0:
        return {}
    data = frame(table)
    placed = data.filter(pl.col("lat").is_not_null() & pl.col("lon").is_not_null())
    where = placed.sort("ts").group_by("device_id").agg(pl.col("lat").last(),
                                                       pl.col("lon").last())
    newest = (data.group_by("device_id")
              .agg(pl.col("ts").max(), pl.col("metric"), pl.col("value"))
              .with_columns(epoch=pl.col("ts").dt.epoch("us") / 1e6,
                            ts=pl.col("ts").dt.convert_time_zone("UTC").dt.to_string(ISO)))
    out: dict[str, dict[str, Any]] = {}
    for row in newest.join(where, on="device_id", how="left").iter_rows(named=True):
        out[row["device_id"]] = {"ts": row["ts"], "epoch": row["epoch"], "lat": row["lat"],
                                 "lon": row["lon"],
                                 "values": dict(zip(row["metric"], row["value"], strict=True))}
    return out
