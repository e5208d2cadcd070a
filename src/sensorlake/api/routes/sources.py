"""Routes of the sources other systems already speak: InfluxDB `POST /api/v2/write`, the
ChirpStack and The Things Stack HTTP integrations, airrohr's "send to own API", and
Sensor.Community data files. The logic is in `sensorlake.ingest` (lineprotocol,
integrations); these handlers only pass the request through and document it in OpenAPI.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from starlette.responses import Response

from sensorlake.api.deps import RuntimeDep, reply_response
from sensorlake.ingest.integrations import accept_airrohr, accept_lorawan, accept_open_data
from sensorlake.ingest.lineprotocol import accept_write

router = APIRouter(tags=["sources"])

COMMON = {401: {"description": "Missing or invalid token"},
          403: {"description": "The token may not send for this device"},
          413: {"description": "Body (after gzip) over http.max_body_bytes"},
          503: {"description": "The log is full: retry after Retry-After seconds"}}
STORED = {200: {"description": "Durably stored (or ignored: not an uplink)",
                "content": {"application/json": {"example": {"accepted": 1,
                                                             "duplicates": 0}}}},
          400: {"description": "Names no device or is not JSON (kept in the quarantine)"},
          **COMMON}


def _args(request: Request) -> tuple:
    headers = request.headers
    return (headers.get("authorization"), request.stream(), headers.get("content-length"),
            headers.get("content-encoding"))


@router.post(
    "/api/v2/write", status_code=204,
    summary="InfluxDB line protocol (Telegraf outputs.influxdb_v2, influxdb-client)",
    openapi_extra={"requestBody": {"required": True, "content": {
        "text/plain": {"schema": {"type": "string"},
                       "example": "air,device=aq-0001 pm2_5=12.3,pm10=20.1 1763906400000000000"}}}},
    responses={204: {"description": "Durably stored; X-Sensorlake-Lines-Accepted and "
                                    "X-Sensorlake-Lines-Rejected count the lines (rejected "
                                    "ones are in the quarantine)"},
               400: {"description": "Bad precision, or no valid line at all (kept in the "
                                    "quarantine)"}, **COMMON},
)
async def write(request: Request, runtime: RuntimeDep,
                precision: Annotated[str | None, Query(
                    description="Timestamp unit: ns (default), us, ms or s")] = None,
                bucket: Annotated[str | None, Query(
                    description="Recorded in the source; any value is accepted")] = None,
                org: Annotated[str | None, Query(description="Accepted and ignored")] = None,
                ) -> Response:
    reply = await accept_write(runtime, *_args(request), precision, bucket)
    if reply.status == 204:
        return Response(status_code=204, headers=reply.headers)
    return reply_response(reply)


@router.post("/api/v1/integrations/chirpstack",
             summary="ChirpStack v4 HTTP integration (JSON encoding)", responses=STORED)
async def chirpstack(request: Request, runtime: RuntimeDep,
                     event: Annotated[str, Query(
                         description="Event type ChirpStack adds; only up is stored")] = "up",
                     ) -> Response:
    return reply_response(await accept_lorawan(runtime, "chirpstack", *_args(request), event))


@router.post("/api/v1/integrations/tts",
             summary="The Things Stack v3 webhook (uplink messages)", responses=STORED)
async def tts(request: Request, runtime: RuntimeDep) -> Response:
    return reply_response(await accept_lorawan(runtime, "tts", *_args(request)))


@router.post("/api/v1/integrations/airrohr",
             summary='airrohr firmware "send to own API"', responses=STORED)
async def airrohr(request: Request, runtime: RuntimeDep,
                  x_sensor: Annotated[str | None, Header(
                      description="esp8266-<chip id>, bound to a device")] = None,
                  x_pin: Annotated[str | None, Header(description="Sensor pin")] = None,
                  ) -> Response:
    return reply_response(await accept_airrohr(runtime, *_args(request), x_sensor, x_pin))


@router.post("/api/v1/integrations/sensor-community",
             summary="A Sensor.Community open-data file (what the poller delivers)",
             responses={200: {"description": "Durably stored", "content": {
                 "application/json": {"example": {
                     "records": 2, "new": 1, "seen": 1, "sensors_registered": 1,
                     "unusable": 0}}}}, **COMMON})
async def sensor_community(request: Request, runtime: RuntimeDep,
                           x_source: Annotated[str | None, Header(
                               description="Where the file came from")] = None) -> Response:
    return reply_response(await accept_open_data(runtime, *_args(request), x_source))
