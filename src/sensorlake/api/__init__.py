"""The HTTP API (FastAPI): ingest, devices, readings, latest, quarantine, status."""
