"""Regulatory air-quality series computed on read: `aqi_us_nowcast` (hourly EPA NowCast AQI),
`aqi_us_daily` (US AQI of the local calendar day's mean) and `aqi_uk_daqi` (UK DAQI of the
24-hour running mean, with the 75 % data-capture rule).

Each series reads the hourly means of pm2_5 and pm10 for every asked device in one query
(with the history it needs before the range), decides which hours are present (the capture
rule of `aqi.hour_min_capture`), computes both pollutants on dense (device, hour) matrices and
returns one row per device and hour (or local day) with the dominant pollutant, the category,
its official colour and a status: "ok", or "insufficient data" with a null value. Formulas and
sources: docs/metrics.md, "Air quality: NowCast, daily AQI and DAQI".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa

from sensorlake.aqi import (
    uk_daqi_bands,
    uk_daqi_floats,
    us_epa_aqi_floats,
    us_epa_categories,
    us_epa_truncate,
)
from sensorlake.aqi_daily import daily_means, local_days, needed_hours
from sensorlake.aqi_nowcast import (
    NOWCAST_HOURS,
    RUNNING_HOURS,
    nowcast,
    running_mean,
    valid_hours,
)
from sensorlake.derived.base import SERIES_COLUMNS, DerivedRequest, DerivedSeries, register
from sensorlake.model import TS_TYPE, Quality
from sensorlake.store.base import ReadingQuery

POLLUTANTS = ("pm2_5", "pm10")
HOUR = timedelta(hours=1)
HOUR_US = 3_600_000_000
INVALID_QUALITY = Quality.OUT_OF_RANGE | Quality.STUCK | Quality.SPIKE | Quality.CLOCK_SUSPECT
"""Readings flagged with any of these do not enter an hourly mean (as `quality=good`)."""
OK, INSUFFICIENT = "ok", "insufficient data"
EXTRA = ("pollutant", "category", "colour", "status")

Floats = npt.NDArray[np.float64]
Labels = Callable[[Floats], tuple[pa.Array, pa.Array]]


def floor_hour(at: datetime) -> datetime:
    at = at.astimezone(UTC)
    return at.replace(minute=0, second=0, microsecond=0)


def _us(at: datetime) -> int:
    return (at.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


# -- reading the hourly means ------------------------------------------------------------------

def read_hourly(request: DerivedRequest, start: datetime, end: datetime) -> pl.DataFrame:
    """Present hourly means (device_id, metric, ts, value, count) of pm2_5 and pm10 of every
    asked device over [start, end), in one query."""
    if not request.device_ids:
        return pl.DataFrame(schema={"device_id": pl.String, "metric": pl.String,
                                    "ts": pl.Datetime("us", "UTC"), "value": pl.Float64,
                                    "count": pl.Int64})
    hours = math.ceil((end - start) / HOUR) + 1
    query = ReadingQuery(tenant=request.tenant, metrics=POLLUTANTS, start=start, end=end,
                         device_ids=request.device_ids, every=HOUR, agg="mean",
                         limit=hours * len(POLLUTANTS) * len(request.device_ids) + 1,
                         exclude_quality=int(INVALID_QUALITY))
    frame = pl.from_arrow(request.read(query))
    assert isinstance(frame, pl.DataFrame)
    return present_hours(frame.with_columns(pl.col("ts").dt.cast_time_unit("us")
                                            .dt.convert_time_zone("UTC")),
                         request.settings.aqi.hour_min_capture)


def present_hours(hourly: pl.DataFrame, capture: float) -> pl.DataFrame:
    """The hourly means that count as present: a finite value from at least `capture` times
    the usual number of readings per hour of that device and pollutant (the median count of
    its hours in the frame). EU/UK rule for hourly means: 75 % of the hour."""
    usual = pl.col("count").median().over("device_id", "metric")
    return hourly.filter(pl.col("value").is_finite()
                         & (pl.col("count") >= capture * usual - 1e-9))


@dataclass(frozen=True)
class HourlyGrid:
    """Hourly means as (device, hour) matrices per pollutant, NaN where not present."""

    devices: list[str]
    start: datetime
    hours: int
    values: dict[str, Floats]


def hourly_grid(hourly: pl.DataFrame, start: datetime, hours: int) -> HourlyGrid:
    """The matrices of `hourly` for `hours` clock hours from `start` (an hour boundary)."""
    devices = sorted(hourly["device_id"].unique().to_list())
    code = {device: i for i, device in enumerate(devices)}
    indexed = hourly.with_columns(
        row=pl.col("device_id").replace_strict(code, return_dtype=pl.Int64),
        col=(pl.col("ts").dt.epoch("us") - _us(start)) // HOUR_US,
    ).filter((pl.col("col") >= 0) & (pl.col("col") < hours))
    values = {}
    for pollutant in POLLUTANTS:
        part = indexed.filter(pl.col("metric") == pollutant)
        matrix = np.full((len(devices), hours), np.nan)
        rows, cols = (part[c].to_numpy().astype(np.int64) for c in ("row", "col"))
        matrix[rows, cols] = part["value"].to_numpy()
        values[pollutant] = matrix
    return HourlyGrid(devices, start, hours, values)


# -- the series ----------------------------------------------------------------------------------

def nowcast_series(request: DerivedRequest) -> pa.Table:
    """`aqi_us_nowcast`: hourly AQI of the NowCast of PM2.5 and PM10."""
    first = floor_hour(request.start)
    lookback = NOWCAST_HOURS
    grid = _grid(request, first, lookback)
    index, used, extra = {}, {}, {}
    for pollutant, values in grid.values.items():
        concentration = nowcast(values)[:, lookback:].ravel()
        index[pollutant] = us_epa_aqi_floats(pollutant, concentration)
        used[pollutant] = valid_hours(values, NOWCAST_HOURS)[:, lookback:].ravel()
        extra[f"{pollutant}_nowcast"] = us_epa_truncate(pollutant, concentration)
    hours = grid.hours - lookback
    return _table("aqi_us_nowcast", *_labels_of(grid.devices, first, hours), index, used,
                  extra, us_epa_categories)


def daqi_series(request: DerivedRequest) -> pa.Table:
    """`aqi_uk_daqi`: hourly DAQI of the 24-hour running mean of PM2.5 and PM10."""
    first = floor_hour(request.start)
    lookback = RUNNING_HOURS
    grid = _grid(request, first, lookback)
    need = needed_hours(request.settings.aqi.daqi_min_capture, RUNNING_HOURS)
    assert isinstance(need, int)
    index, used, extra = {}, {}, {}
    for pollutant, values in grid.values.items():
        mean = running_mean(values, need)[:, lookback:].ravel()
        index[pollutant] = uk_daqi_floats(pollutant, mean)
        used[pollutant] = valid_hours(values, RUNNING_HOURS)[:, lookback:].ravel()
        extra[f"{pollutant}_24h"] = mean
    hours = grid.hours - lookback
    return _table("aqi_uk_daqi", *_labels_of(grid.devices, first, hours), index, used, extra,
                  uk_daqi_bands)


def daily_series(request: DerivedRequest) -> pa.Table:
    """`aqi_us_daily`: US AQI of each local calendar day's mean of hourly means."""
    zones = {device: request.timezone_of(device) for device in request.device_ids}
    days = [d for z in set(zones.values()) for d in local_days(z, request.start, request.end)]
    start = min((d.start for d in days), default=request.start)
    end = max((d.start + d.hours * HOUR for d in days), default=request.end)
    hourly = read_hourly(request, start, end)
    means = daily_means(hourly, zones, request.start, request.end,
                        request.settings.aqi.daily_min_capture)
    keys = means.select("device_id", "ts").unique().sort("device_id", "ts")
    index, used, extra = {}, {}, {}
    for pollutant in POLLUTANTS:
        part = keys.join(means.filter(pl.col("metric") == pollutant), on=["device_id", "ts"],
                         how="left", maintain_order="left")
        mean = part["mean"].fill_null(np.nan).to_numpy().astype(np.float64)
        index[pollutant] = us_epa_aqi_floats(pollutant, mean)
        used[pollutant] = part["hours"].fill_null(0).to_numpy()
        extra[f"{pollutant}_24h"] = us_epa_truncate(pollutant, mean)
    return _table("aqi_us_daily", keys["device_id"].to_arrow(),
                  keys["ts"].to_arrow().cast(TS_TYPE), index, used, extra, us_epa_categories)


# -- building the rows ---------------------------------------------------------------------------

def _grid(request: DerivedRequest, first: datetime, lookback: int) -> HourlyGrid:
    grid_start = first - lookback * HOUR
    hours = lookback + max(0, math.ceil((request.end - first) / HOUR))
    return hourly_grid(read_hourly(request, grid_start, request.end), grid_start, hours)


def _labels_of(devices: list[str], first: datetime, hours: int) -> tuple[pa.Array, pa.Array]:
    """device_id and ts columns of a (device, hour) grid, device-major."""
    codes = np.repeat(np.arange(len(devices), dtype=np.int32), hours)
    device_id = pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(devices,
                                                                          pa.string()))
    ts = np.tile(_us(first) + np.arange(hours, dtype=np.int64) * HOUR_US, len(devices))
    return device_id.cast(pa.string()), pa.array(ts, pa.int64()).cast(TS_TYPE)


def _table(name: str, device_id: pa.Array, ts: pa.Array, index: dict[str, Floats],
           used: dict[str, npt.NDArray[np.int64]], extra: dict[str, Floats],
           labels: Labels) -> pa.Table:
    """SERIES_COLUMNS plus pollutant, category, colour, status and the concentrations: the
    value is the larger sub-index (PM2.5 on a tie), null when neither pollutant has one."""
    rows = len(device_id)
    fine, coarse = index["pm2_5"], index["pm10"]
    value = np.fmax(fine, coarse)
    has_fine, has_coarse = np.isfinite(fine), np.isfinite(coarse)
    pick_fine = has_fine & ~(coarse > fine)
    dominant = np.where(pick_fine, 0, np.where(has_coarse, 1, -1)).astype(np.int32)
    count = np.where(pick_fine, used["pm2_5"], np.where(
        has_coarse, used["pm10"], np.maximum(used["pm2_5"], used["pm10"])))
    missing = ~np.isfinite(value)
    category, colour = labels(value)
    columns = {
        "device_id": device_id,
        "metric": pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, np.int32)),
                                                 pa.array([name])).cast(pa.string()),
        "ts": ts,
        "value": pa.array(value, pa.float64(), mask=missing),
        "count": pa.array(count.astype(np.int64)),
        "pollutant": pa.DictionaryArray.from_arrays(
            pa.array(dominant, mask=dominant < 0), pa.array(POLLUTANTS)).cast(pa.string()),
        "category": category,
        "colour": colour,
        "status": pa.DictionaryArray.from_arrays(pa.array(missing.astype(np.int32)),
                                                 pa.array([OK, INSUFFICIENT])).cast(pa.string()),
    }
    for column, values in extra.items():
        columns[column] = pa.array(values, pa.float64(), mask=~np.isfinite(values))
    schema = SERIES_COLUMNS
    for column in list(columns)[len(SERIES_COLUMNS):]:
        schema = schema.append(pa.field(column, pa.string() if column in EXTRA
                                        else pa.float64()))
    return pa.table(columns).cast(schema)


NOWCAST = register(DerivedSeries(
    name="aqi_us_nowcast", unit="index", inputs=POLLUTANTS, compute=nowcast_series,
    description="US EPA AQI of the hourly PM2.5 / PM10 NowCast (the larger sub-index)",
    lookback=NOWCAST_HOURS * HOUR, default_every=HOUR,
    extra_columns=(*EXTRA, "pm2_5_nowcast", "pm10_nowcast")))
DAILY = register(DerivedSeries(
    name="aqi_us_daily", unit="index", inputs=POLLUTANTS, compute=daily_series,
    description="US EPA AQI of the local calendar day's PM2.5 / PM10 mean (>= 75 % hours)",
    lookback=timedelta(days=1), default_every=timedelta(days=1),
    extra_columns=(*EXTRA, "pm2_5_24h", "pm10_24h")))
DAQI = register(DerivedSeries(
    name="aqi_uk_daqi", unit="index", inputs=POLLUTANTS, compute=daqi_series,
    description="UK DAQI of the 24-hour running PM2.5 / PM10 mean (>= 75 % hours)",
    lookback=RUNNING_HOURS * HOUR, default_every=HOUR,
    extra_columns=(*EXTRA, "pm2_5_24h", "pm10_24h")))
