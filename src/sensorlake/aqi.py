"""Air-quality indices from particulate matter: US EPA AQI (May 2024) and UK DAQI (2011).

The breakpoints below are data, copied from `reference/aqi.md`; the code only looks them up
(numpy `searchsorted`), so the scalar and the array paths share one implementation.

Input and output convention (the same for both index functions):

- **Scalar** in (`int`, `float`, numpy number) -> `int` out. A negative, NaN, infinite or
  `None` concentration raises `ValueError` naming the value.
- **Array-like** in (list, tuple, 1-D numpy array, `pyarrow.Array`, `pyarrow.ChunkedArray`) ->
  always a `pyarrow.Int64Array` of the same length out. An element that is null/`None`, NaN,
  infinite or negative gives a **null** at its position; the valid elements are computed as the
  scalar path would. Nothing is raised for bad elements, so a batch never fails on one reading.

An unknown pollutant raises `ValueError` listing the known ones. Concentrations are µg/m³.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real
from typing import Any, Literal, overload

import numpy as np
import numpy.typing as npt
import pyarrow as pa

Pollutant = Literal["pm2_5", "pm10"]

# --- US EPA AQI, breakpoints in force since 6 May 2024 -------------------------------------
# (concentration low, concentration high, index low, index high), 24-hour µg/m³.
# The last row's line is extended above AQI 500.
US_EPA_BREAKPOINTS: dict[str, tuple[tuple[float, float, int, int], ...]] = {
    "pm2_5": (
        (0.0, 9.0, 0, 50),
        (9.1, 35.4, 51, 100),
        (35.5, 55.4, 101, 150),
        (55.5, 125.4, 151, 200),
        (125.5, 225.4, 201, 300),
        (225.5, 325.4, 301, 500),
    ),
    "pm10": (
        (0, 54, 0, 50),
        (55, 154, 51, 100),
        (155, 254, 101, 150),
        (255, 354, 151, 200),
        (355, 424, 201, 300),
        (425, 604, 301, 500),
    ),
}
US_EPA_STEP: dict[str, float] = {"pm2_5": 0.1, "pm10": 1.0}
"""Concentrations are truncated to this step before the lookup."""

# (highest AQI of the category, name, colour); above the last row is still Hazardous.
US_EPA_CATEGORIES: tuple[tuple[int, str, str], ...] = (
    (50, "Good", "#00E400"),
    (100, "Moderate", "#FFFF00"),
    (150, "Unhealthy for Sensitive Groups", "#FF7E00"),
    (200, "Unhealthy", "#FF0000"),
    (300, "Very Unhealthy", "#8F3F97"),
    (500, "Hazardous", "#7E0023"),
)

# --- UK Daily Air Quality Index (Defra / COMEAP 2011) ---------------------------------------
# Lowest rounded concentration (µg/m³) of index 1..10; 10 is open-ended.
UK_DAQI_LOWER: dict[str, tuple[int, ...]] = {
    "pm2_5": (0, 12, 24, 36, 42, 48, 54, 59, 65, 71),
    "pm10": (0, 17, 34, 51, 59, 67, 76, 84, 92, 101),
}
# (index, band, colour)
UK_DAQI_BANDS: tuple[tuple[int, str, str], ...] = (
    (1, "Low", "#9CFF9C"),
    (2, "Low", "#31FF00"),
    (3, "Low", "#31CF00"),
    (4, "Moderate", "#FFFF00"),
    (5, "Moderate", "#FFCF00"),
    (6, "Moderate", "#FF9A00"),
    (7, "High", "#FF6464"),
    (8, "High", "#FF0000"),
    (9, "High", "#990000"),
    (10, "Very High", "#CE30FF"),
)

_EPS = 1e-9
"""Slack added before floor(): 35.5 stored as 35.49999999999999 still counts as 35.5."""

Scalar = float | int | np.number
ArrayLike = Sequence[Any] | npt.NDArray[Any] | pa.Array | pa.ChunkedArray


def _us_table(pollutant: str) -> tuple[npt.NDArray[np.float64], ...]:
    """The EPA table in integer steps (tenths for PM2.5), so the gaps between bands vanish."""
    rows = US_EPA_BREAKPOINTS[pollutant]
    step = US_EPA_STEP[pollutant]
    c_lo, c_hi, i_lo, i_hi = (np.array(col, dtype=np.float64) for col in zip(*rows, strict=True))
    return np.round(c_lo / step), np.round(c_hi / step), i_lo, i_hi


_US_TABLES = {pollutant: _us_table(pollutant) for pollutant in US_EPA_BREAKPOINTS}
_UK_TABLES = {p: np.array(lower, dtype=np.float64) for p, lower in UK_DAQI_LOWER.items()}


def _us_values(pollutant: str, c: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """AQI of valid (finite, >= 0) concentrations; the vectorized core."""
    lo, hi, i_lo, i_hi = _US_TABLES[pollutant]
    steps = np.floor(c * (1 / US_EPA_STEP[pollutant]) + _EPS)  # truncate, in table steps
    band = np.searchsorted(lo, steps, side="right") - 1  # last band extends upward
    exact = (i_hi[band] - i_lo[band]) * (steps - lo[band]) / (hi[band] - lo[band]) + i_lo[band]
    return np.floor(exact + 0.5).astype(np.int64)  # round half up


def _uk_values(pollutant: str, c: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """DAQI sub-index of valid (finite, >= 0) concentrations; the vectorized core."""
    lower = _UK_TABLES[pollutant]
    rounded = np.floor(c + 0.5 + _EPS)  # nearest integer, half up
    return np.searchsorted(lower, rounded, side="right").astype(np.int64)


@overload
def us_epa_aqi(pollutant: str, concentration: Scalar) -> int: ...
@overload
def us_epa_aqi(pollutant: str, concentration: ArrayLike) -> pa.Int64Array: ...
def us_epa_aqi(pollutant: str, concentration: Scalar | ArrayLike) -> int | pa.Int64Array:
    """US EPA AQI (0-500, extended above) of a PM concentration in µg/m³.

    PM2.5 is truncated to 0.1 and PM10 to 1 µg/m³, then interpolated linearly in its band and
    rounded half up. See the module docstring for the scalar/array convention.
    """
    return _apply(_us_values, pollutant, concentration)


@overload
def uk_daqi(pollutant: str, concentration: Scalar) -> int: ...
@overload
def uk_daqi(pollutant: str, concentration: ArrayLike) -> pa.Int64Array: ...
def uk_daqi(pollutant: str, concentration: Scalar | ArrayLike) -> int | pa.Int64Array:
    """UK DAQI sub-index (1-10) of a PM concentration in µg/m³, rounded half up first.

    See the module docstring for the scalar/array convention.
    """
    return _apply(_uk_values, pollutant, concentration)


def us_epa_category(aqi: int) -> tuple[str, str]:
    """(category name, hex colour) of an EPA AQI; anything above 500 is Hazardous."""
    if isinstance(aqi, bool) or not isinstance(aqi, Real) or not aqi >= 0:
        raise ValueError(f"AQI must be a number >= 0, got {aqi!r}")
    for top, name, colour in US_EPA_CATEGORIES:
        if aqi <= top:
            return name, colour
    return US_EPA_CATEGORIES[-1][1], US_EPA_CATEGORIES[-1][2]


def uk_daqi_band(index: int) -> tuple[str, str]:
    """(band name, hex colour) of a DAQI index 1-10."""
    for number, band, colour in UK_DAQI_BANDS:
        if index == number and not isinstance(index, bool):
            return band, colour
    raise ValueError(f"DAQI index must be an integer from 1 to 10, got {index!r}")


def _check(pollutant: str) -> str:
    if pollutant not in US_EPA_BREAKPOINTS:
        known = ", ".join(sorted(US_EPA_BREAKPOINTS))
        raise ValueError(f"unknown pollutant {pollutant!r}; known: {known}")
    return pollutant


def _apply(core: Any, pollutant: str, concentration: Scalar | ArrayLike) -> int | pa.Int64Array:
    """Run a vectorized core on a scalar (-> int, raise) or an array (-> Int64Array, nulls)."""
    _check(pollutant)
    if concentration is None or isinstance(concentration, Real | np.number):
        c = _scalar(concentration)
        return int(core(pollutant, np.array([c], dtype=np.float64))[0])
    values = _floats(concentration)
    valid = np.isfinite(values) & (values >= 0)
    out = np.zeros(values.shape, dtype=np.int64)
    out[valid] = core(pollutant, values[valid])
    return pa.array(out, type=pa.int64(), mask=~valid)


def _scalar(concentration: object) -> float:
    if isinstance(concentration, bool | np.bool_):
        raise TypeError(f"concentration must be a number, got {concentration!r}")
    c = float(concentration) if concentration is not None else float("nan")
    if not np.isfinite(c) or c < 0:
        raise ValueError(f"concentration must be a finite number >= 0 µg/m³, got {concentration!r}")
    return c


def _floats(concentration: ArrayLike) -> npt.NDArray[np.float64]:
    """Array-like -> 1-D float64 numpy array with NaN wherever the input is null."""
    if isinstance(concentration, pa.ChunkedArray):
        concentration = concentration.combine_chunks()
    if isinstance(concentration, pa.Array):
        values = concentration.cast(pa.float64()).to_numpy(zero_copy_only=False)
    else:
        values = np.asarray(concentration, dtype=np.float64)  # None -> NaN
    if values.ndim != 1:
        raise ValueError(f"concentration array must be 1-D, got shape {values.shape}")
    return values


def us_epa_aqi_floats(pollutant: str,
                     concentration: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """`us_epa_aqi` of a float array as floats, NaN where the input is NaN or negative (no
    Arrow round trip: the derived series' hot path)."""
    return _floats_out(_us_values, _check(pollutant), concentration)


def uk_daqi_floats(pollutant: str,
                   concentration: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """`uk_daqi` of a float array as floats, NaN where the input is NaN or negative."""
    return _floats_out(_uk_values, _check(pollutant), concentration)


def _floats_out(core: Any, pollutant: str,
                concentration: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    values = np.asarray(concentration, dtype=np.float64)
    valid = np.isfinite(values) & (values >= 0)
    out = np.full(values.shape, np.nan)
    out[valid] = core(pollutant, values[valid])
    return out


def us_epa_truncate(pollutant: str,
                    concentration: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Concentrations truncated as the EPA lookup does (PM2.5 to 0.1, PM10 to 1); NaN stays."""
    per_unit = 1 / US_EPA_STEP[_check(pollutant)]
    return np.floor(concentration * per_unit + _EPS) / per_unit


def us_epa_categories(aqi: npt.NDArray[np.float64]) -> tuple[pa.Array, pa.Array]:
    """(category names, colours) of an array of EPA AQIs as Arrow strings; NaN gives nulls."""
    tops = np.array([top for top, _, _ in US_EPA_CATEGORIES], dtype=np.float64)
    rows = np.searchsorted(tops, aqi, side="left").clip(0, len(tops) - 1)
    return _labels(aqi, rows, US_EPA_CATEGORIES)


def uk_daqi_bands(index: npt.NDArray[np.float64]) -> tuple[pa.Array, pa.Array]:
    """(band names, colours) of an array of DAQI indices 1-10 as Arrow strings; NaN gives
    nulls."""
    rows = np.nan_to_num(index, nan=1.0).clip(1, len(UK_DAQI_BANDS)).astype(np.int64) - 1
    return _labels(index, rows, UK_DAQI_BANDS)


def _labels(values: npt.NDArray[np.float64], rows: npt.NDArray[np.int64],
            table: tuple[tuple[int, str, str], ...]) -> tuple[pa.Array, pa.Array]:
    """Dictionary-encoded lookups (no Python per element), decoded to plain strings."""
    indices = pa.array(rows.astype(np.int32), mask=~np.isfinite(values))
    names = pa.array([name for _, name, _ in table])
    colours = pa.array([colour for _, _, colour in table])
    return (pa.DictionaryArray.from_arrays(indices, names).cast(pa.string()),
            pa.DictionaryArray.from_arrays(indices, colours).cast(pa.string()))
