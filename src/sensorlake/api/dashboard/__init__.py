"""The web dashboard: static files (no build step, no CDN) served at `/`."""

from __future__ import annotations

from pathlib import Path

STATIC = Path(__file__).parent / "static"
