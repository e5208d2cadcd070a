"""The AQI stage: derive `aqi_us` and `aqi_uk` readings from `pm2_5` / `pm10` readings.

For every (tenant, device_id, ts) with at least one PM reading, the stage adds one `aqi_us`
row (the maximum US EPA sub-index of the pollutants present) and one `aqi_uk` row (the maximum
UK DAQI sub-index). The new rows copy quality, received_at, lat, lon and msg_id from the
`pm2_5` row, else from the `pm10` row. Existing rows pass through unchanged; a derived row
whose key (tenant, device_id, metric, ts) is already in the batch is not added again, so
running the stage twice changes nothing. PM rows with a negative, NaN or infinite value (which
validation should already have rejected) are skipped, never raised on.

Caveat: both indices are defined on 24-hour means. A per-reading AQI applies those 24-hour
breakpoints to an instantaneous value, so it is an indication of the air quality at that
moment, not the regulatory daily index; that one comes from the daily rollups.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from sensorlake.aqi import uk_daqi, us_epa_aqi
from sensorlake.process.base import WORKING_SCHEMA, Batch, Context

PM_METRICS = ("pm2_5", "pm10")
"""Source metrics, in order of preference for the columns copied onto the derived rows."""

_GROUP = ["tenant", "device_id", "ts"]
_COPIED = ["quality", "received_at", "lat", "lon", "msg_id"]
_KEY = ["tenant", "device_id", "metric", "ts"]


class AqiStage:
    """Adds per-reading `aqi_us` and `aqi_uk` rows computed from PM readings."""

    name = "aqi"

    def process(self, batch: Batch, ctx: Context) -> Batch:
        pm = _valid_pm(batch.readings)
        if pm.num_rows == 0:
            return batch
        derived = _derive(pm)
        existing = pl.DataFrame(batch.readings.select(_KEY))
        derived = derived.join(existing, on=_KEY, how="anti", maintain_order="left")
        if derived.height == 0:
            return batch
        new_rows = derived.select(WORKING_SCHEMA.names).to_arrow().cast(WORKING_SCHEMA)
        return Batch(pa.concat_tables([batch.readings, new_rows]), batch.rejects)


def _valid_pm(readings: pa.Table) -> pa.Table:
    """The PM rows whose value is a finite number >= 0."""
    value = readings.column("value")
    keep = pc.and_(
        pc.is_in(readings.column("metric"), value_set=pa.array(PM_METRICS)),
        pc.and_(pc.is_finite(value), pc.greater_equal(value, 0.0)),
    )
    return readings.filter(pc.fill_null(keep, False))


def _derive(pm: pa.Table) -> pl.DataFrame:
    """One aqi_us and one aqi_uk row per (tenant, device_id, ts) of the valid PM rows."""
    values = pm.column("value").to_numpy()
    metric = pm.column("metric")
    us = np.zeros(pm.num_rows, dtype=np.int64)
    uk = np.zeros(pm.num_rows, dtype=np.int64)
    rank = np.zeros(pm.num_rows, dtype=np.int64)
    for position, pollutant in enumerate(PM_METRICS):  # one vectorized pass per pollutant
        rows = pc.equal(metric, pollutant).to_numpy()
        if rows.any():
            us[rows] = us_epa_aqi(pollutant, values[rows]).to_numpy()
            uk[rows] = uk_daqi(pollutant, values[rows]).to_numpy()
            rank[rows] = position
    frame = pl.DataFrame(pm.select(_GROUP + _COPIED)).with_columns(
        pl.Series("_us", us), pl.Series("_uk", uk), pl.Series("_rank", rank)
    )
    groups = frame.group_by(_GROUP, maintain_order=True).agg(
        *(pl.col(name).sort_by("_rank").first() for name in _COPIED),
        pl.col("_us").max(),
        pl.col("_uk").max(),
    )
    return pl.concat(
        [
            groups.with_columns(metric=pl.lit("aqi_us"), value=pl.col("_us").cast(pl.Float64)),
            groups.with_columns(metric=pl.lit("aqi_uk"), value=pl.col("_uk").cast(pl.Float64)),
        ]
    ).drop("_us", "_uk")
