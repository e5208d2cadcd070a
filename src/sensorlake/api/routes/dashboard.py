"""`/` serves the dashboard; `/static/...` its bundled assets (Leaflet, uPlot, base map)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import FileResponse, Response

from sensorlake.api.dashboard import STATIC

router = APIRouter(tags=["dashboard"], include_in_schema=False)

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: https:; "
    "style-src 'self' 'unsafe-inline'; script-src 'self'; connect-src 'self'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "SAMEORIGIN",
}


@router.get("/")
def index() -> Response:
    return FileResponse(STATIC / "index.html", headers=SECURITY_HEADERS)
