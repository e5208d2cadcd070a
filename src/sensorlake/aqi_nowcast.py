"""EPA NowCast for PM2.5 and PM10, and the 24-hour running mean, on matrices of hourly means.

Both work on a dense float64 matrix `hourly` of shape (series, hours): one row per device and
pollutant, one column per consecutive clock hour, NaN where the hour has no valid hourly
mean. The value at column j looks back at columns j-n+1 .. j (hours before the matrix start
count as missing), so callers put the lookback hours in front and cut them off afterwards.

NowCast (EPA, "Technical Assistance Document for the Reporting of Daily Air Quality", 2024,
and AirNow's "The NowCast for PM2.5 and PM10"): with c1 the most recent of the last 12 hourly
means, w* = c_min / c_max over the valid ones, w = max(w*, 0.5), and
NowCast = sum(w^(i-1) c_i) / sum(w^(i-1)) over the valid hours only: a missing hour drops out
of both sums while the others keep their exponent. At least 2 of c1, c2, c3 must be valid,
else the NowCast is missing. The NowCast is computed from the raw hourly means; truncation
(PM2.5 to 0.1, PM10 to 1 µg/m³) happens in the AQI lookup (`sensorlake.aqi`).

Everything is numpy over the lagged views of the matrix (12 or 24 shifted views, a block of
rows at a time), no Python per hour or per window.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

NOWCAST_HOURS = 12
NOWCAST_MIN_WEIGHT = 0.5
"""The floor of the weight factor for PM (EPA); it approximates a 3-hour mean."""
RECENT_HOURS, RECENT_MIN_VALID = 3, 2
"""At least 2 of the 3 most recent hourly means must exist."""
RUNNING_HOURS = 24

Floats = npt.NDArray[np.float64]
_BLOCK = 1 << 21
"""Matrix elements per block: bounds each temporary to ~16 MB."""


def nowcast(hourly: Floats) -> Floats:
    """NowCast concentration at every hour of every row; NaN where it is not valid."""
    return _by_rows(hourly, NOWCAST_HOURS, _nowcast_lags)


def valid_hours(hourly: Floats, hours: int) -> npt.NDArray[np.int64]:
    """How many valid hourly means each trailing window of `hours` holds (exact integers)."""
    valid = np.isfinite(_matrix(hourly)).astype(np.int64)
    total = np.cumsum(valid, axis=1)
    shifted = np.zeros_like(total)
    if hours < total.shape[1]:
        shifted[:, hours:] = total[:, :-hours]
    return total - shifted


def running_mean(hourly: Floats, min_hours: int, hours: int = RUNNING_HOURS) -> Floats:
    """Mean of the valid hourly means in each trailing window of `hours`; NaN where fewer
    than `min_hours` of them are valid (the data-capture rule)."""
    if not 1 <= min_hours <= hours:
        raise ValueError(f"min_hours must be between 1 and {hours}, got {min_hours}")

    def mean(lags: list[Floats]) -> Floats:
        total = np.zeros_like(lags[0])
        count = np.zeros(lags[0].shape, dtype=np.int64)
        for lag in lags:
            valid = np.isfinite(lag)
            total += np.where(valid, lag, 0.0)
            count += valid
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count >= min_hours, total / count, np.nan)

    return _by_rows(hourly, hours, mean)


def _nowcast_lags(lags: list[Floats]) -> Floats:
    """NowCast from the lagged matrices: lags[0] is c1 (the hour itself), lags[11] is c12.

    In-place numpy on whole blocks: per lag one weight product and two accumulations
    (missing hours carry weight 0 through the 0/1 mask), no per-window copies."""
    shape = lags[0].shape
    c_max = np.full(shape, -np.inf)
    c_min = np.full(shape, np.inf)
    for lag in lags:
        np.fmax(c_max, lag, out=c_max)  # fmax/fmin skip NaN
        np.fmin(c_min, lag, out=c_min)
    with np.errstate(invalid="ignore", divide="ignore"):
        weight = np.where(c_max > 0, c_min / c_max, 1.0)
    np.maximum(weight, NOWCAST_MIN_WEIGHT, out=weight)
    numerator, denominator = np.zeros(shape), np.zeros(shape)
    power = np.ones(shape)  # w^(i-1)
    term = np.empty(shape)
    recent = np.zeros(shape, dtype=np.int8)
    for i, lag in enumerate(lags):
        present = np.isfinite(lag)
        if i < RECENT_HOURS:
            recent += present
        np.multiply(power, present, out=term)  # the hour's weight, 0 when missing
        denominator += term
        term *= np.where(present, lag, 0.0)
        numerator += term
        power *= weight
    with np.errstate(invalid="ignore", divide="ignore"):
        value = numerator / denominator
    value[recent < RECENT_MIN_VALID] = np.nan
    return value


def _matrix(hourly: Floats) -> Floats:
    values = np.asarray(hourly, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"hourly means must be a (series, hours) matrix, got shape "
                         f"{values.shape}")
    return values


def _by_rows(hourly: Floats, size: int, reduce: Callable[[list[Floats]], Floats]) -> Floats:
    """`reduce` over the `size` lagged views (lag 0 = the hour itself) of the matrix, a block
    of rows at a time so the temporaries stay near _BLOCK elements."""
    values = _matrix(hourly)
    rows, hours = values.shape
    out = np.full((rows, hours), np.nan)
    if rows == 0 or hours == 0:
        return out
    step = max(1, _BLOCK // hours)
    for r0 in range(0, rows, step):
        block = values[r0:r0 + step]
        padded = np.concatenate([np.full((block.shape[0], size - 1), np.nan), block], axis=1)
        lags = [padded[:, size - 1 - k: size - 1 - k + hours] for k in range(size)]
        out[r0:r0 + step] = reduce(lags)
    return out
