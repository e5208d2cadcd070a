"""The FastAPI application: one router per resource, the runtime on app.state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from sensorlake import __version__
from sensorlake.api.fastpath import IngestFastPath
from sensorlake.api.routes import ingest, operations, ops, readings
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
    return IngestFastPath(app, runtime) if fast_path else app
