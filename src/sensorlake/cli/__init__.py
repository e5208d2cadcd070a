"""The `sensorlake` command: a thin layer over the library."""

from sensorlake.cli.main import app

__all__ = ["app"]
