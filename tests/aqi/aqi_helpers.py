"""Hourly means as the hot store returns them, and a DerivedRequest that reads them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pyarrow as pa

from sensorlake.config import Settings
from sensorlake.derived.base import DerivedRequest
from sensorlake.store.base import SERIES_SCHEMA, ReadingQuery

T0 = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def hourly(device: str, metric: str, values: Sequence[float | None], start: datetime = T0,
           count: int = 4) -> list[dict]:
    """Rows of hourly means from `start`, one per hour; None leaves the hour out."""
    return [{"device_id": device, "metric": metric, "ts": start + i * HOUR, "value": v,
             "count": count} for i, v in enumerate(values) if v is not None]


class FakeStore:
    """Answers bucketed ReadingQuery calls from fixed hourly rows; records the queries."""

    def __init__(self, rows: list[dict]) -> None:
        self.table = pa.Table.from_pylist(rows, schema=SERIES_SCHEMA)
        self.queries: list[ReadingQuery] = []

    def read(self, query: ReadingQuery) -> pa.Table:
        self.queries.append(query)
        rows = [r for r in self.table.to_pylist()
                if query.start <= r["ts"] < query.end and r["metric"] in query.metrics
                and (query.device_ids is None or r["device_id"] in query.device_ids)]
        return pa.Table.from_pylist(rows, schema=SERIES_SCHEMA)


def request(store: FakeStore, devices: Sequence[str], start: datetime, end: datetime,
            zones: dict[str, str] | None = None, **aqi: float) -> DerivedRequest:
    settings = Settings(aqi=aqi) if aqi else Settings()
    return DerivedRequest(tenant="acme", device_ids=tuple(devices), start=start, end=end,
                          every=None, read=store.read, settings=settings,
                          timezone_of=lambda d: (zones or {}).get(d, "UTC"))


def by_ts(table: pa.Table, device: str | None = None) -> dict[datetime, dict]:
    return {r["ts"]: r for r in table.to_pylist() if device is None or r["device_id"] == device}
