"""The derived-series registry: metrics computed when they are read, never stored.

A derived series (an hourly NowCast, a daily cost) depends on neighbouring readings, so a
late reading changes it. Computing it on read from the stored readings (or their rollups)
keeps it right without bookkeeping. A series names the stored metrics it reads and how much
history before the range it needs (`lookback`); `compute` gets a `DerivedRequest` and returns
SERIES_COLUMNS plus any extra columns it documents (category, colour, status ...).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import pyarrow as pa

from sensorlake.model import TS_TYPE
from sensorlake.store.base import ReadingQuery

if TYPE_CHECKING:
    from sensorlake.config import Settings

SERIES_COLUMNS = pa.schema([
    pa.field("device_id", pa.string(), nullable=False),
    pa.field("metric", pa.string(), nullable=False),
    pa.field("ts", TS_TYPE, nullable=False),
    pa.field("value", pa.float64()),
    pa.field("count", pa.int64()),
])
"""The columns every derived series returns first (value may be null: "insufficient data")."""

Reader = Callable[[ReadingQuery], pa.Table]
"""Runs a ReadingQuery against the hot store (rollups or raw, as the store plans it)."""


@dataclass(frozen=True)
class DerivedRequest:
    """What a derived series is asked for: [start, end) of some devices of one tenant."""

    tenant: str
    device_ids: tuple[str, ...]
    start: datetime
    end: datetime
    every: timedelta | None
    read: Reader
    settings: Settings
    timezone_of: Callable[[str], str]
    """IANA time zone of a device (its `tz` tag, else the tenant's, else the default)."""
    tags_of: Callable[[str], dict[str, str]] = field(default=lambda _device: {})


@dataclass(frozen=True)
class DerivedSeries:
    name: str
    unit: str
    description: str
    inputs: tuple[str, ...]
    """Stored metrics it reads."""
    compute: Callable[[DerivedRequest], pa.Table]
    lookback: timedelta = timedelta(0)
    """History before `start` the computation reads (24 h for a running mean)."""
    extra_columns: tuple[str, ...] = ()
    """Columns beyond SERIES_COLUMNS, documented in docs/metrics.md."""
    default_every: timedelta | None = None
    """The natural resolution (1 h for NowCast); used when the request gives none."""


REGISTRY: dict[str, DerivedSeries] = {}


def register(series: DerivedSeries) -> DerivedSeries:
    """Add a series to the registry (module import time); a name is registered once."""
    if series.name in REGISTRY and REGISTRY[series.name] is not series:
        raise ValueError(f"derived series {series.name!r} is registered twice")
    REGISTRY[series.name] = series
    return series


def load_all() -> dict[str, DerivedSeries]:
    """Import every module that registers series, then return the registry."""
    import importlib
    import pkgutil

    import sensorlake.derived as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in {"base", "timezones", "serve"}:
            importlib.import_module(f"sensorlake.derived.{info.name}")
    return REGISTRY


def empty_series() -> pa.Table:
    return SERIES_COLUMNS.empty_table()
