"""Dependencies shared by the routers: the runtime and the authenticated principal."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import orjson
from fastapi import Depends, HTTPException, Request
from starlette.responses import Response

from sensorlake.auth.tokens import Principal
from sensorlake.errors import AuthError
from sensorlake.ingest.http import Reply

if TYPE_CHECKING:
    from sensorlake.runtime import Runtime


async def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


async def get_principal(request: Request) -> Principal:
    """The principal of `Authorization: Bearer <token>` (or `Token <token>`), else 401."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() not in ("bearer", "token") or not token.strip():
        raise HTTPException(401, "missing credentials: send 'Authorization: Bearer <token>' "
                            "(create one with `sensorlake tokens create`)",
                            headers={"WWW-Authenticate": "Bearer"})
    runtime: Runtime = request.app.state.runtime
    try:
        return runtime.tokens.verify(token.strip())
    except AuthError as exc:
        raise HTTPException(exc.status, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None


RuntimeDep = Annotated["Runtime", Depends(get_runtime)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]


def reply_response(reply: Reply) -> Response:
    response = json_response(reply.content, reply.status)
    response.headers.update(reply.headers)
    return response


def json_response(content: object, status_code: int = 200) -> Response:
    """A JSON response serialized by orjson (the ingest hot path skips FastAPI's encoder)."""
    return Response(orjson.dumps(content), status_code=status_code,
                    media_type="application/json")
