"""Build working-schema batches for the quality stage: one row per (device, metric, t, value)."""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa

from sensorlake.model import TS_TYPE
from sensorlake.process.base import WORKING_SCHEMA, Batch

T0 = 1_795_435_200_000_000  # 2026-11-23T12:00:00Z in µs
S = 1_000_000
DAY = 86_400


def batch(rows: Iterable[tuple], tenant: str = "t1") -> Batch:
    """rows: (device, metric, t seconds after T0, value[, quality[, received seconds]]).
    received_at defaults to ts (a device with a perfect clock and no delay)."""
    out = []
    for row in rows:
        device, metric, t, value, *rest = row
        quality = rest[0] if rest else 0
        received = rest[1] if len(rest) > 1 else t
        out.append({"tenant": tenant, "device_id": device, "metric": metric,
                    "ts": T0 + int(t * S), "value": float(value), "quality": quality,
                    "received_at": T0 + int(received * S), "lat": None, "lon": None,
                    "msg_id": "m"})
    table = pa.Table.from_pylist(out, schema=WORKING_SCHEMA.remove(3).insert(
        3, pa.field("ts", pa.int64())).remove(6).insert(6, pa.field("received_at", pa.int64())))
    table = table.set_column(3, WORKING_SCHEMA.field("ts"), table.column("ts").cast(TS_TYPE))
    table = table.set_column(6, WORKING_SCHEMA.field("received_at"),
                             table.column("received_at").cast(TS_TYPE))
    return Batch(table.cast(WORKING_SCHEMA))


def qualities(result: Batch) -> list[int]:
    return result.readings.column("quality").to_pylist()
