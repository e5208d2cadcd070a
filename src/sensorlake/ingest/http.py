"""HTTP ingest, independent of the web framework: headers and body chunks in, a response out.

`accept()` is the whole of `POST /api/v1/ingest`: authenticate, read the body within limits,
split it into envelopes (reading only what authorization needs), append them to the log and
answer only after the append is durable. The FastAPI route (documentation, OpenAPI) and the
ASGI fast path (throughput) both call it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sensorlake.auth.tokens import Action, Principal, authorize
from sensorlake.errors import (
    AuthError,
    Backpressure,
    InputError,
    MessageTooLarge,
    TransientError,
)
from sensorlake.ingest.body import BodyTooLarge, read_body
from sensorlake.ingest.envelopes import parse_body

if TYPE_CHECKING:
    from sensorlake.runtime import Runtime


@dataclass
class Reply:
    status: int
    content: Any
    headers: dict[str, str] = field(default_factory=dict)


def _error(status: int, detail: Any, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, {"detail": detail}, headers or {})


def authenticate(runtime: Runtime, authorization: str | None) -> Principal:
    """The principal of `Bearer <token>` / `Token <token>`; AuthError(401) otherwise."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() not in ("bearer", "token") or not token.strip():
        raise AuthError("missing credentials: send 'Authorization: Bearer <token>' (create "
                        "one with `sensorlake tokens create`)")
    return runtime.tokens.verify(token.strip())


async def accept(runtime: Runtime, authorization: str | None,
                 chunks: AsyncIterator[bytes] | bytes,
                 content_length: str | None, content_encoding: str | None) -> Reply:
    """Handle one ingest request end to end."""
    try:
        principal = authenticate(runtime, authorization)
        authorize(principal, Action.WRITE, principal.tenant)
        body = await read_body(chunks, runtime.settings.http.max_body_bytes, content_length,
                               content_encoding)
        parsed = parse_body(body, principal, time.time_ns() // 1000)
        if not parsed.envelopes:
            raise InputError("empty body: send a JSON envelope, or one envelope per line")
    except AuthError as exc:
        return _error(exc.status, str(exc),
                      {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None)
    except BodyTooLarge as exc:
        return _error(413, str(exc))
    except InputError as exc:
        return _error(400, str(exc))
    try:
        result = await runtime.appender.append(parsed.envelopes)
    except MessageTooLarge as exc:
        return _error(413, str(exc))
    except Backpressure as exc:
        retry = max(runtime.settings.http.retry_after_seconds, round(exc.retry_after))
        return _error(503, str(exc), {"Retry-After": str(retry)})
    except TransientError as exc:
        return _error(503, f"could not store the request, retry: {exc}", {"Retry-After": "1"})
    quarantined = len(parsed.errors)
    runtime.counters.http_requests += 1
    runtime.counters.http_envelopes += result.accepted
    if quarantined and quarantined == len(parsed.envelopes):
        return _error(400, {"error": "no usable envelope in the body (kept in the quarantine)",
                            "errors": parsed.errors[:20]})
    content: dict[str, Any] = {
        "accepted": result.accepted + result.duplicates - quarantined,
        "duplicates": result.duplicates,
        "watermarks": {device: seq for (_, device), seq in result.watermarks.items()},
    }
    if quarantined:
        content["quarantined"] = quarantined
        content["errors"] = parsed.errors[:100]
    return Reply(200, content)
