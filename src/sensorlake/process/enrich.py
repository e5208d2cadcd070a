"""enrich: what the registry knows about each device, joined onto its readings.

- Readings of devices not in the registry are rejected (unless `ingest.auto_register`).
- Location: rows without a GPS fix get the device's static lat/lon.
- Calibration: value = raw × scale + offset for (device, metric) pairs that have one; those
  rows get the CALIBRATED quality bit.
- Precision: values are rounded to the metric's catalog precision (0.1 µg/m³, 0.01 °C ...),
  which is what the sensor can resolve and what makes the lake compress to bytes per reading.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sensorlake.model import Quality
from sensorlake.process.base import REJECT_SCHEMA, Batch, Context
from sensorlake.process.validate import metric_catalog

SEP = "\x1f"
"""Joins key parts into one lookup string (a character no id or metric name contains)."""


def _decimals(precision: float) -> int:
    """Decimal places of a precision step (0.1 -> 1); -1 for 0, which means keep as sent."""
    if precision <= 0:
        return -1
    return max(0, min(15, round(-math.log10(precision))))


def _key(*columns: pa.ChunkedArray | pa.Array) -> pa.Array:
    """One string per row from several string columns, for index_in lookups."""
    return pc.binary_join_element_wise(*columns, SEP)


def _lookup(keys: pa.Array, table: pa.Table, *key_columns: str) -> pa.Array:
    """For each key, the index of its row in `table` (null when absent)."""
    return pc.index_in(keys, value_set=_key(*(table.column(c) for c in key_columns)))


class EnrichStage:
    name = "enrich"

    def process(self, batch: Batch, ctx: Context) -> Batch:
        readings = batch.readings
        if readings.num_rows == 0:
            return batch
        device_key = _key(readings.column("tenant"), readings.column("device_id"))
        device_row = _lookup(device_key, ctx.devices, "tenant", "device_id")
        rejected = REJECT_SCHEMA.empty_table()
        unknown = pc.is_null(device_row)
        if not ctx.settings.ingest.auto_register and pc.any(unknown).as_py():
            rejected = _unknown_devices(readings.filter(unknown), self.name)
            known = pc.invert(unknown)
            readings, device_row = readings.filter(known), device_row.filter(known)
        value = readings.column("value").to_numpy()
        quality = readings.column("quality").to_numpy()
        if ctx.calibrations.num_rows:
            value, quality = _calibrate(readings, ctx, value, quality)
        value = _round_to_precision(readings.column("metric"), value, ctx)
        enriched = readings.set_column(
            readings.schema.get_field_index("value"), "value", pa.array(value, pa.float64()))
        enriched = enriched.set_column(
            enriched.schema.get_field_index("quality"), "quality", pa.array(quality, pa.int16()))
        for name, static in (("lat", "static_lat"), ("lon", "static_lon")):
            filled = pc.coalesce(readings.column(name), ctx.devices.column(static).take(
                device_row))
            enriched = enriched.set_column(enriched.schema.get_field_index(name), name, filled)
        return batch.with_rejects(enriched.cast(batch.readings.schema), rejected)


def _unknown_devices(rows: pa.Table, stage: str) -> pa.Table:
    device, tenant = rows.column("device_id"), rows.column("tenant")
    reason = pc.binary_join_element_wise(
        "device '", device, "' is not registered in tenant '", tenant,
        "': add it with `sensorlake devices add ", device, " --tenant ", tenant, "`", "")
    return pa.table({
        "msg_id": rows.column("msg_id"), "tenant": tenant, "device_id": device,
        "stage": pa.repeat(stage, rows.num_rows), "field": rows.column("metric"),
        "value": pc.cast(rows.column("value"), pa.string()), "reason": reason,
    }, schema=REJECT_SCHEMA)


def _calibrate(readings: pa.Table, ctx: Context, value: np.ndarray,
               quality: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """value = raw × scale + offset where (device, metric) has a calibration; flag those."""
    row = _lookup(_key(readings.column("tenant"), readings.column("device_id"),
                       readings.column("metric")), ctx.calibrations,
                  "tenant", "device_id", "metric")
    calibrated = pc.is_valid(row).to_numpy(zero_copy_only=False)
    if not calibrated.any():
        return value, quality
    scale = ctx.calibrations.column("scale").take(row).to_numpy(zero_copy_only=False)
    offset = ctx.calibrations.column("offset").take(row).to_numpy(zero_copy_only=False)
    value = np.where(calibrated, value * scale + offset, value)
    quality = np.where(calibrated, quality | Quality.CALIBRATED, quality)
    return value, quality


def _round_to_precision(metric: pa.ChunkedArray, value: np.ndarray,
                        ctx: Context) -> np.ndarray:
    """Each value rounded (half to even) to its metric's catalog precision; metrics without
    one keep their value."""
    catalog = metric_catalog(ctx)
    names = pa.array(catalog["metric"].to_list(), pa.string())
    decimals = np.array([_decimals(p) for p in catalog["precision"].to_list()], np.int64)
    row = pc.fill_null(pc.index_in(metric, value_set=names), -1).to_numpy(
        zero_copy_only=False)
    per_row = np.where(row >= 0, decimals[row], -1)
    out = value.copy()
    for places in np.unique(per_row[per_row >= 0]):
        chosen = per_row == places
        scale = 10.0 ** places
        out[chosen] = np.round(value[chosen] * scale) / scale
    return out
