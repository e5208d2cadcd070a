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
        metric = batch.readings.column("metric")
        if pc.any(pc.is_in(metric, value_set=DERIVED)).as_py():  # rare: already derived
            existing = pl.DataFrame(batch.readings.select(_KEY))
            derived = pl.DataFrame(derived).join(
                existing, on=_KEY, how="anti", maintain_order="left").to_arrow()
            if derived.num_rows == 0:
                return batch
        new_rows = derived.select(WORKING_SCHEMA.names).cast(WORKING_SCHEMA)
        return Batch(pa.concat_tables([batch.readings, new_rows]), batch.rejects)


DERIVED = pa.array(["aqi_us", "aqi_uk"])


def _valid_pm(readings: pa.Table) -> pa.Table:
    """The PM rows whose value is a finite number >= 0."""
    value = readings.column("value")
    keep = pc.and_(
        pc.is_in(readings.column("metric"), value_set=pa.array(PM_METRICS)),
        pc.and_(pc.is_finite(value), pc.greater_equal(value, 0.0)),
    )
    return readings.filter(pc.fill_null(keep, False))


def _codes(column: pa.ChunkedArray) -> np.ndarray:
    """Integer codes of a string column (equal strings, equal codes)."""
    return pc.dictionary_encode(column).combine_chunks().indices.to_numpy(
        zero_copy_only=False).astype(np.int64)


def _derive(pm: pa.Table) -> pa.Table:
    """One aqi_us and one aqi_uk row per (tenant, device_id, ts) of the valid PM rows.

    Rows are sorted by (tenant, device, ts, pollutant preference); each run of equal keys is
    one group: its maxima come from `np.maximum.reduceat`, its copied columns from its first
    row (the pm2_5 row when there is one)."""
    values = pm.column("value").to_numpy()
    metric = pm.column("metric")
    us = np.zeros(pm.num_rows, dtype=np.int64)
    uk = np.zeros(pm.num_rows, dtype=np.int64)
    rank = np.zeros(pm.num_rows, dtype=np.int64)
    for position, pollutant in enumerate(PM_METRICS):  # one vectorized pass per pollutant
        rows = pc.equal(metric, pollutant).to_numpy(zero_copy_only=False)
        if rows.any():
            us[rows] = us_epa_aqi(pollutant, values[rows]).to_numpy()
            uk[rows] = uk_daqi(pollutant, values[rows]).to_numpy()
            rank[rows] = position
    tenant, device = _codes(pm.column("tenant")), _codes(pm.column("device_id"))
    ts = pc.cast(pm.column("ts"), pa.int64()).to_numpy()
    order = np.lexsort((rank, ts, device, tenant))
    key_changes = (np.diff(tenant[order]) != 0) | (np.diff(device[order]) != 0) | (
        np.diff(ts[order]) != 0)
    starts = np.flatnonzero(np.concatenate(([True], key_changes)))
    first = pa.array(order[starts])
    groups = pm.select(_GROUP + _COPIED).take(first)
    count = groups.num_rows
    index_us = np.maximum.reduceat(us[order], starts).astype(np.float64)
    index_uk = np.maximum.reduceat(uk[order], starts).astype(np.float64)
    return pa.concat_tables([
        groups.append_column("metric", pa.repeat("aqi_us", count)).append_column(
            "value", pa.array(index_us)),
        groups.append_column("metric", pa.repeat("aqi_uk", count)).append_column(
            "value", pa.array(index_uk)),
    ])
