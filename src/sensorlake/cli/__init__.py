"""The `sensorlake` command: a thin layer over the library."""

import os

# polars sizes its thread pool once, at import. sensorlake hands it small tables per batch
# while ingest, the log writer and the worker already keep the cores busy; a pool of one
# measured faster there. Set POLARS_MAX_THREADS yourself to override (docs/configuration.md).
os.environ.setdefault("POLARS_MAX_THREADS", "1")

from sensorlake.cli.main import app

__all__ = ["app"]
