"""Who is calling and what they may do: authentication, rate limits and the Cedar decision.

    CallerDep   the principal: a token, or an anonymous visitor when public mode is on
    AccessDep   `.device(id, action)` and `.tenant(action)`: the one decision per request

Status codes: no or bad credentials 401; a device id that is not in the caller's tenant 404
(another tenant's device does not exist for you); a decision that denies 403 (401 for an
anonymous visitor, who should sign in); over the token's budget 429 with Retry-After.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, HTTPException, Request

from sensorlake.auth.policies import DeviceResource, DeviceScope, TenantResource
from sensorlake.auth.tokens import Principal, Role
from sensorlake.errors import AuthError

if TYPE_CHECKING:
    from sensorlake.runtime import Runtime

BEARER = {"WWW-Authenticate": "Bearer"}
ANONYMOUS_TOKEN_ID = "anonymous"


def _runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def _limit(runtime: Runtime, request: Request, principal: Principal) -> None:
    settings = runtime.settings.auth
    if principal.kind == "anonymous":
        client = request.client.host if request.client else "?"
        key, budget = f"ip:{client}", settings.anonymous_rate_per_minute
    else:
        key = f"token:{principal.token_id}"
        budget = principal.rate_per_minute or settings.rate_per_minute
    wait = runtime.auth.rate_limiter.check(key, budget)
    if wait is not None:
        raise HTTPException(429, f"over the rate limit of {budget} requests per minute: "
                            f"retry after {wait:g} s", headers={"Retry-After": f"{wait:g}"})


def caller(request: Request) -> Principal:
    """The principal of `Authorization: Bearer <token>`; without one, the anonymous visitor
    of public mode (`api.public_tenant`), else 401."""
    runtime = _runtime(request)
    cached = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not header.strip() and runtime.settings.api.public_tenant:
        principal = Principal(ANONYMOUS_TOKEN_ID, Role.PUBLIC, runtime.settings.api.public_tenant,
                              scopes=frozenset({"read"}), kind="anonymous")
    elif scheme.lower() not in ("bearer", "token") or not token.strip():
        raise HTTPException(401, "missing credentials: send 'Authorization: Bearer <token>' "
                            "(create one with `sensorlake tokens create`, or log in at "
                            "POST /api/v1/auth/login)", headers=BEARER)
    else:
        try:
            principal = runtime.tokens.verify(token.strip())
        except AuthError as exc:
            raise HTTPException(exc.status, str(exc), headers=BEARER) from None
    _limit(runtime, request, principal)
    request.state.principal = principal
    return principal


CallerDep = Annotated[Principal, Depends(caller)]


class Access:
    """The authorization of one request (one Cedar decision)."""

    def __init__(self, runtime: Runtime, principal: Principal) -> None:
        self.runtime = runtime
        self.principal = principal
        self.authorizer = runtime.auth.authorizer

    @property
    def tenant_id(self) -> str:
        return self.principal.tenant

    def _deny(self, action: str, what: str) -> HTTPException:
        verb = action.replace("_device", "").replace("_", " ")
        if self.principal.kind == "anonymous":
            return HTTPException(401, f"sign in to {verb} {what}", headers=BEARER)
        return HTTPException(403, f"your {self.principal.role.value} access may not "
                             f"{verb} {what} (see `sensorlake grants`)")

    def device(self, device_id: str, action: str) -> DeviceResource:
        """The device of the caller's tenant if the policies allow `action` on it."""
        resource = self.authorizer.device(self.principal.tenant, device_id)
        if resource is None:
            raise HTTPException(404, f"no device '{device_id}' in your tenant")
        if not self.authorizer.decide(self.principal, action, resource):
            raise self._deny(action, f"device '{device_id}'")
        return resource

    def tenant(self, action: str) -> DeviceScope:
        """Allow `action` on the caller's tenant; the devices it reaches, for the SQL."""
        resource = TenantResource(self.principal.tenant)
        if not self.authorizer.decide(self.principal, action, resource):
            raise self._deny(action, "in this tenant")
        return self.authorizer.scope(self.principal, action)

    def require(self, action: str) -> None:
        """Allow a tenant-level action that returns no device rows (tokens, grants, status)."""
        self.tenant(action)


def access(request: Request, principal: CallerDep) -> Access:
    return Access(_runtime(request), principal)


AccessDep = Annotated[Access, Depends(access)]
