"""The FastAPI application: one router per resource, the runtime on app.state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from sensorlake import __version__
from sensorlake.api import openapi
from sensorlake.api.dashboard import STATIC
from sensorlake.api.fastpath import IngestFastPath
from sensorlake.api.limits import BodyLimit
from sensorlake.api.routes import (
    admin,
    auth,
    dashboard,
    devices,
    exports,
    ingest,
    latest,
    operations,
    ops,
    readings,
)
from sensorlake.api.routes import sources as source_routes

if TYPE_CHECKING:
    from sensorlake.runtime import Runtime


def create_app(runtime: Runtime, fast_path: bool = True) -> Any:
    """The ASGI app: FastAPI behind the ingest fast path (set fast_path=False to get the
    plain FastAPI app, e.g. to inspect routes)."""
    app = FastAPI(
        title="sensorlake",
        version=__version__,
        description="Sensor readings in (JSON envelopes), queries and status out. "
        "Authenticate with `Authorization: Bearer <token>` (`sensorlake tokens create`).",
    )
    app.state.runtime = runtime
    app.include_router(ingest.router)
    app.include_router(readings.router)
    app.include_router(ops.router)
    app.include_router(operations.router)
    app.include_router(source_routes.router)
    for router in (devices, latest, exports, auth, admin, dashboard):
        app.include_router(router.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    openapi.install(app)
    if not fast_path:
        return app
    settings = getattr(runtime, "settings", None)
    limit = settings.api.max_json_body_bytes if settings is not None else 64 << 10
    limited = BodyLimit(app, limit, skip=("/api/v1/ingest", "/api/v2/", "/api/v1/integrations/"))
    return IngestFastPath(limited, runtime)
