"""Tokens, grants and the audit log of a tenant (owner, admin scope)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from sensorlake.api.access import AccessDep
from sensorlake.api.deps import RuntimeDep
from sensorlake.api.routes.readings import ERRORS
from sensorlake.auth.audit import actor_of
from sensorlake.auth.tokens import SCOPES, Role
from sensorlake.errors import InputError, NotFound
from sensorlake.timeparse import parse_duration

router = APIRouter(prefix="/api/v1", tags=["access"])


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"role": "ingest", "device": "aq-0001", "label": "station 1", "expires_in": "365d"}]})
    role: Role
    device: str | None = Field(None, max_length=128, description="Bind to one device.")
    label: str = Field("", max_length=256)
    expires_in: str | None = Field(None, description="e.g. 30d; default never.",
                                   pattern=r"^\d+(\.\d+)?(s|m|h|d|w)$")
    scopes: list[str] | None = Field(None, description=f"A subset of the role's: {SCOPES}")
    rate_per_minute: int | None = Field(None, ge=1, le=1_000_000)


class GrantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"template": "guest", "user": "bob", "device": "aq-0001"}]})
    template: str = Field(description="guest or utility")
    user: str = Field(min_length=1, max_length=128, description="A user of your tenant.")
    device: str | None = Field(None, max_length=128, description="Default: the whole tenant.")


def _token_row(info: Any) -> dict[str, Any]:
    return {"id": info.id, "role": info.role.value, "device": info.device_id,
            "label": info.label, "scopes": list(info.scopes), "created_at": info.created_at,
            "expires_at": info.expires_at, "revoked_at": info.revoked_at,
            "last_used_at": info.last_used_at, "rate_per_minute": info.rate_per_minute}


@router.get("/tokens", summary="API tokens of your tenant (never their values)",
            responses=ERRORS)
def list_tokens(runtime: RuntimeDep, access: AccessDep) -> dict:
    access.require("manage_tokens")
    rows = [_token_row(i) for i in runtime.tokens.list(access.tenant_id)]
    return {"meta": {"tenant": access.tenant_id, "count": len(rows)}, "results": rows}


@router.post("/tokens", summary="Create an API token (its value is shown only here)",
             status_code=201, responses=ERRORS)
def create_token(body: TokenCreate, runtime: RuntimeDep, access: AccessDep) -> dict:
    access.require("manage_tokens")
    tenant = access.tenant_id
    if body.device is not None and runtime.auth.authorizer.device(tenant, body.device) is None:
        raise HTTPException(404, f"no device '{body.device}' in your tenant")
    try:
        token, info = runtime.tokens.create(
            body.role, tenant, body.device, body.label,
            parse_duration(body.expires_in) if body.expires_in else None,
            tuple(body.scopes) if body.scopes is not None else None,
            rate_per_minute=body.rate_per_minute)
    except InputError as exc:
        raise HTTPException(422, str(exc)) from None
    runtime.auth.audit.record(tenant, actor_of(access.principal), "token.create", info.id,
                              role=info.role.value, device=info.device_id,
                              scopes=list(info.scopes))
    return {"token": token, **_token_row(info)}


@router.delete("/tokens/{token_id}", summary="Revoke a token", status_code=204,
               responses=ERRORS)
def revoke_token(token_id: str, runtime: RuntimeDep, access: AccessDep) -> Response:
    access.require("manage_tokens")
    try:
        runtime.tokens.revoke(token_id, access.tenant_id)
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    runtime.auth.audit.record(access.tenant_id, actor_of(access.principal), "token.revoke",
                              token_id)
    return Response(status_code=204)


def _grant_row(grant: Any) -> dict[str, Any]:
    return {"id": grant.id, "template": grant.template, "user": grant.user,
            "device": grant.device_id, "created_at": grant.created_at,
            "created_by": grant.created_by}


@router.get("/grants", summary="Guest and utility grants of your tenant", responses=ERRORS)
def list_grants(runtime: RuntimeDep, access: AccessDep) -> dict:
    access.require("manage_grants")
    rows = [_grant_row(g) for g in runtime.auth.grants.list(access.tenant_id)]
    return {"meta": {"tenant": access.tenant_id, "count": len(rows)}, "results": rows}


@router.post("/grants", summary="Link a user to a device (or the tenant) through a template",
             status_code=201, responses=ERRORS)
def create_grant(body: GrantCreate, runtime: RuntimeDep, access: AccessDep) -> dict:
    access.require("manage_grants")
    actor = actor_of(access.principal)
    try:
        grant = runtime.auth.grants.add(access.tenant_id, body.template, body.user,
                                        body.device, actor)
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except InputError as exc:
        raise HTTPException(422, str(exc)) from None
    runtime.auth.authorizer.refresh()
    runtime.auth.audit.record(access.tenant_id, actor, "grant.add", grant.id,
                              template=grant.template, user=grant.user, device=grant.device_id)
    return _grant_row(grant)


@router.delete("/grants/{grant_id}", summary="Revoke a grant", status_code=204,
               responses=ERRORS)
def revoke_grant(grant_id: str, runtime: RuntimeDep, access: AccessDep) -> Response:
    access.require("manage_grants")
    try:
        grant = runtime.auth.grants.revoke(access.tenant_id, grant_id)
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    runtime.auth.authorizer.refresh()
    runtime.auth.audit.record(access.tenant_id, actor_of(access.principal), "grant.revoke",
                              grant_id, template=grant.template, user=grant.user,
                              device=grant.device_id)
    return Response(status_code=204)


@router.get("/audit", summary="Who changed grants, tokens and devices, newest first",
            responses=ERRORS)
def audit(runtime: RuntimeDep, access: AccessDep,
          limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
          action: Annotated[str | None, Query(description="e.g. grant.add")] = None) -> dict:
    access.require("read_audit")
    rows = runtime.auth.audit.list(access.tenant_id, limit, action)
    return {"meta": {"tenant": access.tenant_id, "count": len(rows)}, "results": rows}
