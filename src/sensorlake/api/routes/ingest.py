"""POST /api/v1/ingest: JSON envelopes in, 200 only after the durable append.

The handler below documents the route in OpenAPI and serves it when the fast path is off;
`sensorlake.api.fastpath` serves the same `accept()` without the framework's per-request
overhead.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from sensorlake.api.deps import RuntimeDep, reply_response
from sensorlake.ingest.http import accept

router = APIRouter(tags=["ingest"])

INGEST_EXAMPLE = {"device": "aq-0001", "ts": "2026-11-23T14:00:00Z", "seq": 42,
                  "readings": {"pm2_5": 12.3, "pm10": 20.1}}


@router.post(
    "/api/v1/ingest",
    summary="Send readings (JSON envelope, batch form or NDJSON)",
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"example": INGEST_EXAMPLE},
        "application/x-ndjson": {"schema": {"type": "string"}}}},
        "security": [{"bearer": []}]},
    responses={200: {"description": "Durably stored: accepted count and per-device watermark",
                     "content": {"application/json": {"example": {
                         "accepted": 1, "duplicates": 0, "watermarks": {"aq-0001": 42}}}}},
               400: {"description": "No usable envelope (kept in the quarantine)"},
               401: {"description": "Missing or invalid token"},
               403: {"description": "The token may not send for this device"},
               413: {"description": "Body (after gzip) over http.max_body_bytes"},
               503: {"description": "The log is full: retry after Retry-After seconds"}},
)
async def ingest(request: Request, runtime: RuntimeDep) -> Response:
    reply = await accept(runtime, request.headers.get("authorization"), request.stream(),
                         request.headers.get("content-length"),
                         request.headers.get("content-encoding"))
    return reply_response(reply)
