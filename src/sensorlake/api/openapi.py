"""The OpenAPI document: a bearer security scheme declared for every route that needs it."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

PUBLIC_PATHS = {"/healthz", "/livez", "/readyz", "/metrics", "/api/v1/catalog",
                "/api/v1/auth/login"}
"""Routes that need no token (others accept the anonymous visitor only in public mode).
`/metrics` needs an owner token when `status.metrics_public` is off."""


def install(app: FastAPI) -> None:
    """Replace `app.openapi` with one that declares bearer auth (tokens `slk_...`)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, description=app.description,
                          routes=app.routes)
        doc.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "slk_ token",
                       "description": "`sensorlake tokens create`, or a session from "
                       "POST /api/v1/auth/login"}}
        for path, operations in doc.get("paths", {}).items():
            for operation in operations.values():
                if path in PUBLIC_PATHS:
                    operation["security"] = []
                else:
                    operation.setdefault("security", [{"bearer": []}])
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
