"""Serve derived series beside stored metrics: split a query's metrics, compute the derived
ones through the registry, and return one table (SERIES_COLUMNS first, extra columns after)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

import polars as pl
import pyarrow as pa

from sensorlake.derived.base import SERIES_COLUMNS, DerivedRequest, load_all
from sensorlake.derived.timezones import device_timezone
from sensorlake.errors import ConfigError
from sensorlake.store.base import ReadingQuery


def split_metrics(metrics: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(stored, derived) metric names, each in the asked order."""
    registry = load_all()
    derived = tuple(m for m in metrics if m in registry)
    return tuple(m for m in metrics if m not in registry), derived


def request_for(runtime: Any, query: ReadingQuery) -> DerivedRequest:
    """A DerivedRequest over `query`'s range and devices, reading through the hot store."""
    tenant = query.tenant
    devices = {d.id: d for d in runtime.registry.list(tenant)}
    ids = query.device_ids if query.device_ids is not None else tuple(sorted(devices))
    time = runtime.settings.time

    def tags_of(device_id: str) -> dict[str, str]:
        device = devices.get(device_id)
        return dict(device.tags) if device else {}

    def timezone_of(device_id: str) -> str:
        try:
            return device_timezone(tags_of(device_id), tenant, time.tenants, time.timezone)
        except ConfigError as exc:
            raise ConfigError(f"device '{device_id}': its `tz` tag: {exc} (fix it with "
                              "`sensorlake devices add` or a devices.yaml import)") from None

    return DerivedRequest(tenant=tenant, device_ids=tuple(ids), start=query.start,
                          end=query.end, every=query.every, read=runtime.hot.readings,
                          settings=runtime.settings, timezone_of=timezone_of, tags_of=tags_of)


def derived_readings(runtime: Any, query: ReadingQuery, names: tuple[str, ...]) -> pa.Table:
    """Every asked derived series over `query`, concatenated, ordered like stored series."""
    registry = load_all()
    request = request_for(runtime, query)
    tables = []
    for name in names:
        series = registry[name]
        asked = request if request.every or not series.default_every else replace(
            request, every=series.default_every)
        tables.append(series.compute(asked))
    if not tables:
        return SERIES_COLUMNS.empty_table()
    table = pa.concat_tables(tables, promote_options="default")
    return table.sort_by([("device_id", "ascending"), ("metric", "ascending"),
                          ("ts", "ascending")])


def combine(stored: pa.Table | None, derived: pa.Table | None) -> pa.Table:
    """Stored rows then derived rows, with the union of their columns (types promoted)."""
    parts = [t for t in (stored, derived) if t is not None]
    if not parts:
        return SERIES_COLUMNS.empty_table()
    return pa.concat_tables(parts, promote_options="permissive")


def read_with_derived(runtime: Any, query: ReadingQuery, timeout: float | None = None
                      ) -> pa.Table:
    """A range query over stored and derived metrics: stored ones from `runtime.hot`, derived
    ones computed whole, merged in (device_id, metric, ts) order and paged like stored rows
    (the API's readings routes and `sensorlake query` without a server)."""
    stored, derived = split_metrics(query.metrics)
    if not derived:
        return runtime.hot.readings(query, timeout=timeout)
    stored_rows = runtime.hot.readings(replace(query, metrics=stored), timeout=timeout) \
        if stored else None
    table = combine(stored_rows, derived_readings(runtime, query, derived))
    table = table.sort_by([("device_id", "ascending"), ("metric", "ascending"),
                           ("ts", "ascending")])
    if query.after is not None:
        table = after_cursor(table, query.after)
    return table.slice(0, query.limit)


def after_cursor(table: pa.Table, after: tuple[str, str, datetime]) -> pa.Table:
    """The rows after a `meta.next` cursor in (device_id, metric, ts) order."""
    device, metric, at = after
    d, m, t = pl.col("device_id"), pl.col("metric"), pl.col("ts")
    later = (d > device) | ((d == device) & (m > metric)) | (
        (d == device) & (m == metric) & (t > pl.lit(at).dt.convert_time_zone("UTC")))
    data = pl.from_arrow(table)
    assert isinstance(data, pl.DataFrame)
    return data.filter(later).to_arrow()
