"""An ASGI layer that serves `POST /api/v1/ingest` without FastAPI's per-request machinery.

Ingest is the one route that sees thousands of requests per second; routing, dependency
injection and middleware cost more than the work itself there. Every other request goes to
the FastAPI app untouched. Behaviour is identical: both call `sensorlake.ingest.http.accept`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import orjson

from sensorlake.ingest.http import accept

if TYPE_CHECKING:
    from sensorlake.runtime import Runtime

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

FAST_ROUTES = {("POST", "/api/v1/ingest")}


class IngestFastPath:
    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    def __getattr__(self, name: str) -> Any:
        """Everything else (routes, openapi(), state) is the FastAPI app's."""
        return getattr(self.app, name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) not in FAST_ROUTES:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        limit = self.runtime.settings.http.max_body_bytes
        reply = await accept(self.runtime, headers.get("authorization"),
                             await _whole_body(receive, limit), headers.get("content-length"),
                             headers.get("content-encoding"))
        body = orjson.dumps(reply.content)
        out = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
        out += [(k.lower().encode(), v.encode()) for k, v in reply.headers.items()]
        await send({"type": "http.response.start", "status": reply.status, "headers": out})
        await send({"type": "http.response.body", "body": body})


async def _whole_body(receive: Receive, limit: int) -> bytes:
    """The request body as received (most arrive in one message), cut just past `limit` so
    that `read_body` refuses it without buffering more."""
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body"):
        return body
    parts, size = [body], len(body)
    while message.get("more_body") and size <= limit:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)
