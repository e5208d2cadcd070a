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

Everything is numpy on blocks of sliding windows (about a million windows a block), no
Python per hour.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

NOWCAST_HOURS = 12
NOWCAST_MIN_WEIGHT = 0.5
"""The floor of the weight factor for PM (EPA); it approximates a 3-hour mean."""
RECENT_HOURS, RECENT_MIN_VALID = 3, 2
"""At least 2 of the 3 most recent hourly means must exist."""
RUNNING_HOURS = 24

Floats = npt.NDArray[np.float64]
_BLOCK = 1 << 20
"""Windows per numpy block: bounds the memory of a (block, window) copy to ~100 MB."""


def nowcast(hourly: Floats) -> Floats:
    """NowCast concentration at every hour of every row; NaN where it is not valid."""
    return _rolling(hourly, NOWCAST_HOURS, _nowcast_windows)


def valid_hours(hourly: Floats, hours: int) -> npt.NDArray[np.int64]:
    """How many valid hourly means each trailing window of `hours` holds (exact integers)."""
    valid = np.isfinite(_matrix(hourly)).astype(np.int64)
    total = np.cumsum(valid, axis=1)
    shifted = np.zeros_like(total)
    shifted[:, hours:] = total[:, :-hours] if hours < total.shape[1] else 0
    return total - shifted


def running_mean(hourly: Floats, min_hours: int, hours: int = RUNNING_HOURS) -> Floats:
    """Mean of the valid hourly means in each trailing window of `hours`; NaN where fewer
    than `min_hours` of them are valid (the data-capture rule)."""
    if not 1 <= min_hours <= hours:
        raise ValueError(f"min_hours must be between 1 and {hours}, got {min_hours}")

    def mean(windows: Floats) -> Floats:
        valid = np.isfinite(windows)
        count = valid.sum(axis=1)
        total = np.where(valid, windows, 0.0).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count >= min_hours, total / count, np.nan)

    return _rolling(hourly, hours, mean)


def _nowcast_windows(windows: Floats) -> Floats:
    """NowCast of (n, 12) windows, oldest hour first (as sliding_window_view gives them)."""
    c = windows[:, ::-1]  # c[:, 0] is c1, the most recent hour
    valid = np.isfinite(c)
    enough = valid[:, :RECENT_HOURS].sum(axis=1) >= RECENT_MIN_VALID
    c_max = np.where(valid, c, -np.inf).max(axis=1)
    c_min = np.where(valid, c, np.inf).min(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(c_max > 0, c_min / c_max, 1.0)  # all zero: every hour weighs 1
        weight = np.maximum(ratio, NOWCAST_MIN_WEIGHT)
        powers = np.where(valid, weight[:, None] ** np.arange(c.shape[1]), 0.0)
        value = (powers * np.where(valid, c, 0.0)).sum(axis=1) / powers.sum(axis=1)
    return np.where(enough, value, np.nan)


def _matrix(hourly: Floats) -> Floats:
    values = np.asarray(hourly, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"hourly means must be a (series, hours) matrix, got shape "
                         f"{values.shape}")
    return values


def _rolling(hourly: Floats, size: int, reduce: Callable[[Floats], Floats]) -> Floats:
    """`reduce` over every trailing window of `size` columns, in blocks of ~_BLOCK windows."""
    values = _matrix(hourly)
    rows, hours = values.shape
    out = np.full((rows, hours), np.nan)
    if rows == 0 or hours == 0:
        return out
    padded = np.concatenate([np.full((rows, size - 1), np.nan), values], axis=1)
    windows = sliding_window_view(padded, size, axis=1)  # (rows, hours, size), a view
    cols = max(1, min(hours, _BLOCK // max(rows, 1)))
    row_block = max(1, _BLOCK // cols)
    for r0 in range(0, rows, row_block):
        for c0 in range(0, hours, cols):
            block = windows[r0:r0 + row_block, c0:c0 + cols]
            shape = block.shape[:2]
            out[r0:r0 + row_block, c0:c0 + cols] = reduce(
                block.reshape(-1, size)).reshape(shape)
    return out
