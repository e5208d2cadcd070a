"""What stages pass around: a Batch of readings plus the rejects found so far.

A stage is any object with a `name` and `process(batch, ctx) -> Batch`. It works on the whole
Arrow table at once (pyarrow.compute, polars, numpy), never one Python call per reading.
A stage that finds bad rows moves them from `readings` to `rejects` with a reason that names
the device, the metric and the value; it never raises for bad input.

During processing `readings` has READING_SCHEMA plus a `msg_id` column that ties each row to
the log envelope it came from (so quarantine can keep the raw bytes). Sinks drop `msg_id`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import pyarrow as pa

from sensorlake.model import READING_SCHEMA

if TYPE_CHECKING:
    from sensorlake.config import Settings

WORKING_SCHEMA = READING_SCHEMA.append(pa.field("msg_id", pa.string(), nullable=False))
"""Readings as they travel between stages."""

REJECT_SCHEMA = pa.schema(
    [
        pa.field("msg_id", pa.string(), nullable=False),
        pa.field("tenant", pa.string(), nullable=False),
        pa.field("device_id", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("field", pa.string()),
        pa.field("value", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
    ]
)
"""One row per rejected reading or message; `field` is the metric or JSON path, if any."""

DEVICE_SCHEMA = pa.schema(
    [
        pa.field("tenant", pa.string(), nullable=False),
        pa.field("device_id", pa.string(), nullable=False),
        pa.field("static_lat", pa.float64()),
        pa.field("static_lon", pa.float64()),
        pa.field("static_alt", pa.float64()),
    ]
)
"""The registry as stages see it (one row per device)."""

CALIBRATION_SCHEMA = pa.schema(
    [
        pa.field("tenant", pa.string(), nullable=False),
        pa.field("device_id", pa.string(), nullable=False),
        pa.field("metric", pa.string(), nullable=False),
        pa.field("scale", pa.float64(), nullable=False),
        pa.field("offset", pa.float64(), nullable=False),
    ]
)
"""Per (device, metric) linear calibration: stored = raw * scale + offset."""

DEVICE_TAG_SCHEMA = pa.schema(
    [
        pa.field("tenant", pa.string(), nullable=False),
        pa.field("device_id", pa.string(), nullable=False),
        pa.field("tag", pa.string(), nullable=False),
        pa.field("value", pa.string(), nullable=False),
    ]
)
"""Registry tags, one row per (device, tag) (the quality stage reads `cadence`, `expected.*`)."""

PREVIOUS_SCHEMA = pa.schema(
    [
        pa.field("tenant", pa.string(), nullable=False),
        pa.field("device_id", pa.string(), nullable=False),
        pa.field("metric", pa.string(), nullable=False),
        pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
    ]
)
"""The newest stored reading of a (tenant, device, metric) key, as `Context.previous` gives."""

PreviousLookup = Callable[[pa.Table], pa.Table]
"""Keys (tenant, device_id, metric) -> PREVIOUS_SCHEMA rows of those the hot store holds."""


def empty_working() -> pa.Table:
    return WORKING_SCHEMA.empty_table()


def empty_rejects() -> pa.Table:
    return REJECT_SCHEMA.empty_table()


@dataclass
class Batch:
    """Readings and rejects travelling through the stages together."""

    readings: pa.Table = field(default_factory=empty_working)
    rejects: pa.Table = field(default_factory=empty_rejects)

    def with_rejects(self, kept: pa.Table, rejected: pa.Table) -> Batch:
        """A new batch keeping `kept` and adding `rejected` (REJECT_SCHEMA) to the rejects."""
        if rejected.num_rows == 0:
            return Batch(kept, self.rejects)
        return Batch(kept, pa.concat_tables([self.rejects, rejected.cast(REJECT_SCHEMA)]))


@dataclass
class Context:
    """What stages may look at besides the batch."""

    settings: Settings
    devices: pa.Table = field(default_factory=DEVICE_SCHEMA.empty_table)
    calibrations: pa.Table = field(default_factory=CALIBRATION_SCHEMA.empty_table)
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    device_tags: pa.Table = field(default_factory=DEVICE_TAG_SCHEMA.empty_table)
    previous: PreviousLookup | None = None
    """The hot store's newest reading per key (seeds the quality stage's state), if any."""


@runtime_checkable
class Stage(Protocol):
    """batch -> batch, on the whole table at once."""

    name: str

    def process(self, batch: Batch, ctx: Context) -> Batch: ...


def device_tag_table(devices: Sequence[Any]) -> pa.Table:
    """DEVICE_TAG_SCHEMA rows from registry devices (objects with tenant, id, tags)."""
    return pa.Table.from_pylist(
        [{"tenant": d.tenant, "device_id": d.id, "tag": k, "value": str(v)}
         for d in devices for k, v in d.tags.items()], schema=DEVICE_TAG_SCHEMA)


def commit_stages(stages: Sequence[object]) -> None:
    """Tell stateful stages that the batch they last processed is committed."""
    for stage in stages:
        commit = getattr(stage, "commit", None)
        if commit is not None:
            commit()


def rollback_stages(stages: Sequence[object]) -> None:
    """Tell stateful stages to forget what the batches since the last commit taught them
    (the batch will be processed again: retry, bisection)."""
    for stage in stages:
        rollback = getattr(stage, "rollback", None)
        if rollback is not None:
            rollback()
