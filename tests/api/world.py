"""Two tenants with every kind of principal, for the authorization tests.

Each tenant T in ("a", "b") has devices T-aq-1 (public), T-aq-2 (private), T-energy-1
(type energy_meter) and T-spare; users T-owner, T-guest (granted T-aq-2), T-util (utility,
14:00-17:00 UTC, granted the whole tenant) and a public token. Public mode shows tenant a
(set `runtime.settings.api.public_tenant` to change it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from sensorlake.api.app import create_app
from sensorlake.auth.tokens import Role
from sensorlake.config import load_settings
from sensorlake.registry import Device
from sensorlake.runtime import Runtime

PASSWORD = "correct horse battery"
INSIDE = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
OUTSIDE = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
"""Still Argon2id, with small parameters so that the tests do not spend seconds hashing."""
PRINCIPALS = ("owner", "guest", "utility_in", "utility_out", "public", "anonymous")


@dataclass
class Tenant:
    name: str
    tokens: dict[str, str | None] = field(default_factory=dict)
    token_id: str = ""
    grant_id: str = ""

    def device(self, suffix: str) -> str:
        return f"{self.name}-{suffix}"


class World:
    def __init__(self, data_dir: Path, public_tenant: str | None = "a",
                 start_worker: bool = False, **overrides: Any) -> None:
        worker = {"lake_flush_seconds": 0.2, "poll_seconds": 0.05}
        settings = load_settings(data_dir=data_dir, worker=worker,
                                 api={"public_tenant": public_tenant,
                                      **overrides.pop("api", {})}, **overrides)
        self.runtime = rt = Runtime(settings)
        if start_worker:
            rt.start_worker()
        self.client = TestClient(create_app(rt))
        rt.auth.users.hasher = FAST_HASHER
        self.tenants: dict[str, Tenant] = {}
        for name in ("a", "b"):
            tenant = Tenant(name)
            rt.registry.upsert([
                Device(id=f"{name}-aq-1", tenant=name, type="air_quality", lat=52.09,
                       lon=5.12, public=True),
                Device(id=f"{name}-aq-2", tenant=name, type="air_quality", lat=52.10, lon=5.13),
                Device(id=f"{name}-energy-1", tenant=name, type="energy_meter", lat=52.11,
                       lon=5.14),
                Device(id=f"{name}-spare", tenant=name, type="air_quality")])
            users = rt.auth.users
            users.add(name, f"{name}-owner", PASSWORD, Role.OWNER)
            users.add(name, f"{name}-guest", PASSWORD, Role.GUEST)
            users.add(name, f"{name}-util", PASSWORD, Role.UTILITY, (840, 1020))
            tenant.grant_id = rt.auth.grants.add(name, "guest", f"{name}-guest",
                                                 f"{name}-aq-2").id
            rt.auth.grants.add(name, "utility", f"{name}-util", None)
            for role, user in (("owner", "owner"), ("guest", "guest"), ("utility", "util")):
                tenant.tokens[role] = self.login(name, f"{name}-{user}")
            tenant.tokens["public"], _ = rt.tokens.create(Role.PUBLIC, name, label="site")
            tenant.tokens["ingest"], info = rt.tokens.create(Role.INGEST, name)
            tenant.token_id = info.id
            self.tenants[name] = tenant
        rt.auth.authorizer.refresh()
        self.at(INSIDE)

    def login(self, tenant: str, user: str) -> str:
        response = self.client.post("/api/v1/auth/login", json={
            "tenant": tenant, "username": user, "password": PASSWORD})
        assert response.status_code == 200, response.text
        return str(response.json()["token"])

    def at(self, moment: datetime) -> None:
        """Decide as if it were `moment` (the utility window)."""
        self.runtime.auth.authorizer.clock = lambda: moment

    def headers(self, tenant: str, principal: str) -> dict[str, str]:
        """Authorization for a principal of the matrix (utility_in/out share one token)."""
        if principal == "anonymous":
            return {}
        role = "utility" if principal.startswith("utility") else principal
        self.at(OUTSIDE if principal == "utility_out" else INSIDE)
        return {"Authorization": f"Bearer {self.tenants[tenant].tokens[role]}"}

    def close(self) -> None:
        self.runtime.close()


def app_routes() -> list[tuple[str, str]]:
    """(method, path) of every APIRoute of the app, included routers too."""
    from fastapi.routing import APIRoute

    app = create_app(object(), fast_path=False)  # type: ignore[arg-type]
    try:  # newer FastAPI keeps included routers lazily; this walks them
        from fastapi.routing import iter_route_contexts
        pairs = [(ctx.original_route, ctx.path) for ctx in iter_route_contexts(app.routes)]
    except ImportError:
        pairs = [(route, getattr(route, "path", None)) for route in app.routes]
    return sorted({(method, path) for route, path in pairs if isinstance(route, APIRoute)
                   for method in route.methods if method != "HEAD"})
