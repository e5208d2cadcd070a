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

import polars as pl
import pyarrow as pa

from sensorlake.model import Quality
from sensorlake.process.base import REJECT_SCHEMA, Batch, Context
from sensorlake.process.validate import metric_catalog


def _decimals(precision: float) -> int:
    if precision <= 0:
        return 15
    return max(0, min(15, round(-math.log10(precision))))


class EnrichStage:
    name = "enrich"

    def process(self, batch: Batch, ctx: Context) -> Batch:
        if batch.readings.num_rows == 0:
            return batch
        frame = pl.from_arrow(batch.readings)
        assert isinstance(frame, pl.DataFrame)
        columns = frame.columns
        devices = pl.from_arrow(ctx.devices)
        assert isinstance(devices, pl.DataFrame)
        devices = devices.with_columns(pl.lit(True).alias("_known"))
        joined = frame.join(devices, on=["tenant", "device_id"], how="left")

        unknown = joined.filter(pl.col("_known").is_null())
        rejected = REJECT_SCHEMA.empty_table()
        if unknown.height and not ctx.settings.ingest.auto_register:
            rejected = pa.table({
                "msg_id": unknown["msg_id"].to_arrow(), "tenant": unknown["tenant"].to_arrow(),
                "device_id": unknown["device_id"].to_arrow(),
                "stage": pa.repeat(self.name, unknown.height),
                "field": unknown["metric"].to_arrow(),
                "value": unknown["value"].cast(pl.String).to_arrow(),
                "reason": unknown.select(pl.format(
                    "device '{}' is not registered in tenant '{}': add it with "
                    "`sensorlake devices add {} --tenant {}`", "device_id", "tenant",
                    "device_id", "tenant"))[:, 0].to_arrow(),
            }, schema=REJECT_SCHEMA)
            joined = joined.filter(pl.col("_known").is_not_null())

        calibrations = pl.from_arrow(ctx.calibrations)
        assert isinstance(calibrations, pl.DataFrame)
        joined = joined.join(calibrations, on=["tenant", "device_id", "metric"], how="left")
        precision = metric_catalog(ctx).select(
            "metric", pl.col("precision").map_elements(_decimals, return_dtype=pl.Int32)
            .alias("_decimals"))
        joined = joined.join(precision, on="metric", how="left")
        calibrated = pl.col("scale").is_not_null()
        value = pl.when(calibrated).then(pl.col("value") * pl.col("scale") + pl.col("offset")) \
            .otherwise(pl.col("value"))
        enriched = joined.with_columns(
            pl.col("lat").fill_null(pl.col("static_lat")),
            pl.col("lon").fill_null(pl.col("static_lon")),
            pl.when(calibrated).then(pl.col("quality") | Quality.CALIBRATED)
            .otherwise(pl.col("quality")).cast(pl.Int16).alias("quality"),
            _round(value, pl.col("_decimals")).alias("value"),
        ).select(columns)
        return batch.with_rejects(enriched.to_arrow().cast(batch.readings.schema), rejected)


def _round(value: pl.Expr, decimals: pl.Expr) -> pl.Expr:
    """Round each value to its own number of decimals (metrics without one stay as they are)."""
    scale = pl.lit(10.0).pow(decimals.cast(pl.Float64))
    return pl.when(decimals.is_null()).then(value).otherwise((value * scale).round() / scale)
