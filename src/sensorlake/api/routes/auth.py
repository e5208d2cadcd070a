"""Login, logout and who-am-I."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from sensorlake.api.access import CallerDep
from sensorlake.api.deps import RuntimeDep
from sensorlake.auth.audit import actor_of
from sensorlake.auth.users import format_window
from sensorlake.errors import AuthError

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])
LOGINS_PER_MINUTE = 20
"""Login attempts per client address (slows down password guessing)."""


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"tenant": "default", "username": "alice", "password": "correct horse battery"}]})
    tenant: str | None = Field(None, max_length=128,
                               description="Default: the server's default tenant.")
    username: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=1024)


class Session(BaseModel):
    token: str = Field(description="Send as `Authorization: Bearer <token>`; shown once.")
    token_id: str
    role: str
    tenant: str
    expires_at: str | None


@router.post("/login", summary="Exchange a user name and password for a session token",
             response_model=Session,
             responses={401: {"description": "Wrong tenant, user name or password"},
                        429: {"description": "Too many attempts from this address"}},
             openapi_extra={"security": []})
def login(body: Login, request: Request, runtime: RuntimeDep) -> Session:
    client = request.client.host if request.client else "?"
    wait = runtime.auth.rate_limiter.check(f"login:{client}", LOGINS_PER_MINUTE,
                                           burst=LOGINS_PER_MINUTE)
    if wait is not None:
        raise HTTPException(429, f"too many login attempts: retry after {wait:g} s",
                            headers={"Retry-After": f"{wait:g}"})
    tenant = body.tenant or runtime.settings.default_tenant
    try:
        token, info = runtime.auth.users.login(tenant, body.username, body.password,
                                               runtime.settings.auth.session_hours)
    except AuthError as exc:
        raise HTTPException(401, str(exc)) from None
    runtime.auth.audit.record(tenant, f"user:{body.username}", "session.open", info.id)
    return Session(token=token, token_id=info.id, role=info.role.value, tenant=tenant,
                   expires_at=info.expires_at)


@router.post("/logout", summary="End the session (or revoke the token) sent with it",
             status_code=204, responses={401: {"description": "Missing or invalid token"}})
def logout(runtime: RuntimeDep, principal: CallerDep) -> None:
    if principal.kind == "anonymous":
        raise HTTPException(401, "nothing to log out of: no token was sent")
    runtime.tokens.revoke(principal.token_id)
    runtime.auth.audit.record(principal.tenant, actor_of(principal), "session.close",
                              principal.token_id)


@router.get("/me", summary="Who the token acts as",
            responses={401: {"description": "Missing or invalid token"}})
def me(principal: CallerDep) -> dict[str, Any]:
    return {"tenant": principal.tenant, "role": principal.role.value, "kind": principal.kind,
            "user": principal.user_name, "device": principal.device_id,
            "scopes": sorted(principal.scopes),
            "window": format_window(*principal.window) if principal.role.value == "utility"
            else None,
            "token_id": None if principal.kind == "anonymous" else principal.token_id}
