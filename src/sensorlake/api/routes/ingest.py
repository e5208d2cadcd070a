"""POST /api/v1/ingest: JSON envelopes in, 200 only after the durable append."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, HTTPException, Request
from starlette.responses import Response

from sensorlake.api.deps import PrincipalDep, RuntimeDep, json_response
from sensorlake.auth.tokens import Action, authorize
from sensorlake.errors import AuthError, Backpressure, InputError, TransientError
from sensorlake.ingest.body import BodyTooLarge, read_body
from sensorlake.ingest.envelopes import parse_body

router = APIRouter(tags=["ingest"])

INGEST_EXAMPLE = {"device": "aq-0001", "ts": "2026-11-23T14:00:00Z", "seq": 42,
                  "readings": {"pm2_5": 12.3, "pm10": 20.1}}


@router.post(
    "/api/v1/ingest",
    summary="Send readings (JSON envelope, batch form or NDJSON)",
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"example": INGEST_EXAMPLE},
        "application/x-ndjson": {"schema": {"type": "string"}}}}},
    responses={200: {"description": "Durably stored: accepted count and per-device watermark",
                     "content": {"application/json": {"example": {
                         "accepted": 1, "duplicates": 0, "watermarks": {"aq-0001": 42}}}}},
               413: {"description": "Body (after gzip) over http.max_body_bytes"},
               503: {"description": "The log is full: retry after Retry-After seconds"}},
)
async def ingest(request: Request, runtime: RuntimeDep,
                 principal: PrincipalDep) -> Response:
    try:
        authorize(principal, Action.WRITE, principal.tenant)
        body = await read_body(request, runtime.settings.http.max_body_bytes)
        parsed = parse_body(body, principal, time.time_ns() // 1000)
    except BodyTooLarge as exc:
        raise HTTPException(413, str(exc)) from None
    except AuthError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    except InputError as exc:
        raise HTTPException(400, str(exc)) from None
    try:
        result = await asyncio.wrap_future(runtime.log.submit(parsed.envelopes))
    except Backpressure as exc:
        retry = str(max(runtime.settings.http.retry_after_seconds, round(exc.retry_after)))
        raise HTTPException(503, str(exc), headers={"Retry-After": retry}) from None
    except TransientError as exc:
        raise HTTPException(503, f"could not store the request, retry: {exc}",
                            headers={"Retry-After": "1"}) from None
    quarantined = len(parsed.errors)
    if quarantined and quarantined == len(parsed.envelopes):
        raise HTTPException(400, {"error": "no usable envelope in the body (kept in the "
                                  "quarantine)", "errors": parsed.errors[:20]})
    content: dict = {
        "accepted": result.accepted + result.duplicates - quarantined,
        "duplicates": result.duplicates,
        "watermarks": {device: seq for (_, device), seq in result.watermarks.items()},
    }
    if quarantined:
        content["quarantined"] = quarantined
        content["errors"] = parsed.errors[:100]
    runtime.counters.http_requests += 1
    runtime.counters.http_envelopes += result.accepted
    return json_response(content)
