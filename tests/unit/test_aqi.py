"""US EPA AQI (May 2024) and UK DAQI from PM: band edges, truncation, rounding, arrays."""

from __future__ import annotations

import math
import re
from fractions import Fraction

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sensorlake.aqi import uk_daqi, uk_daqi_band, us_epa_aqi, us_epa_category

# Independent copy of reference/aqi.md, in exact steps (tenths for PM2.5, units for PM10).
EPA = {
    "pm2_5": (10, [(0, 90, 0, 50), (91, 354, 51, 100), (355, 554, 101, 150),
                   (555, 1254, 151, 200), (1255, 2254, 201, 300), (2255, 3254, 301, 500)]),
    "pm10": (1, [(0, 54, 0, 50), (55, 154, 51, 100), (155, 254, 101, 150),
                 (255, 354, 151, 200), (355, 424, 201, 300), (425, 604, 301, 500)]),
}
DAQI_TOP = {  # highest rounded concentration of index 1..9
    "pm2_5": [11, 23, 35, 41, 47, 53, 58, 64, 70],
    "pm10": [16, 33, 50, 58, 66, 75, 83, 91, 100],
}


def exact_epa(pollutant: str, steps: int) -> int:
    """Oracle: the formula in exact rational arithmetic, rounded half up."""
    _, rows = EPA[pollutant]
    lo, hi, i_lo, i_hi = next(r for r in reversed(rows) if steps >= r[0])
    value = Fraction(i_hi - i_lo, hi - lo) * (steps - lo) + i_lo
    return math.floor(value + Fraction(1, 2))


US_EDGES = [
    ("pm2_5", 0.0, 0), ("pm2_5", 9.0, 50), ("pm2_5", 9.1, 51), ("pm2_5", 35.4, 100),
    ("pm2_5", 35.5, 101), ("pm2_5", 55.4, 150), ("pm2_5", 55.5, 151), ("pm2_5", 125.4, 200),
    ("pm2_5", 125.5, 201), ("pm2_5", 225.4, 300), ("pm2_5", 225.5, 301), ("pm2_5", 325.4, 500),
    ("pm10", 0, 0), ("pm10", 54, 50), ("pm10", 55, 51), ("pm10", 154, 100), ("pm10", 155, 101),
    ("pm10", 254, 150), ("pm10", 255, 151), ("pm10", 354, 200), ("pm10", 355, 201),
    ("pm10", 424, 300), ("pm10", 425, 301), ("pm10", 604, 500),
]


@pytest.mark.parametrize(("pollutant", "concentration", "expected"), US_EDGES)
def test_us_band_edges(pollutant: str, concentration: float, expected: int) -> None:
    assert us_epa_aqi(pollutant, concentration) == expected


@pytest.mark.parametrize(("pollutant", "concentration", "expected"), [
    ("pm2_5", 35.49, 100), ("pm2_5", 35.45, 100), ("pm2_5", 9.09, 50), ("pm2_5", 9.05, 50),
    ("pm2_5", 9.0999999, 50), ("pm2_5", 325.49, 500), ("pm10", 54.9, 50), ("pm10", 154.99, 100),
    ("pm10", 604.9, 500),
])
def test_us_truncates_before_lookup(pollutant: str, concentration: float, expected: int) -> None:
    assert us_epa_aqi(pollutant, concentration) == expected


@pytest.mark.parametrize(("pollutant", "edge", "expected"), [e for e in US_EDGES if e[1] > 0])
def test_float_error_just_below_an_edge_counts_as_the_edge(
    pollutant: str, edge: float, expected: int
) -> None:
    below = math.nextafter(float(edge), 0.0)  # e.g. 35.5 computed as 35.49999999999999
    assert us_epa_aqi(pollutant, below) == expected


def test_arithmetic_representation_error() -> None:
    assert 1.255 * 100 < 125.5  # 125.49999999999999, e.g. after a mg -> µg conversion
    assert us_epa_aqi("pm2_5", 1.255 * 100) == 201
    assert us_epa_aqi("pm2_5", [1.255 * 100]).equals(pa.array([201]))


def test_every_tenth_matches_exact_formula() -> None:
    for pollutant, (per_unit, _) in EPA.items():
        steps = np.arange(0, 700 * per_unit)
        got = us_epa_aqi(pollutant, steps / per_unit).to_numpy()
        assert got.tolist() == [exact_epa(pollutant, int(s)) for s in steps]


def test_worked_examples() -> None:
    # (100 - 51) / (35.4 - 9.1) * (20.0 - 9.1) + 51 = 71.31 -> 71
    assert us_epa_aqi("pm2_5", 20.0) == 71
    # 50 / 9.0 * 4.5 = 25.0
    assert us_epa_aqi("pm2_5", 4.5) == 25
    # (100 - 51) / (154 - 55) * (100 - 55) + 51 = 73.27 -> 73
    assert us_epa_aqi("pm10", 100) == 73
    # (150 - 101) / (55.4 - 35.5) * (40.0 - 35.5) + 101 = 112.08 -> 112
    assert us_epa_aqi("pm2_5", 40.0) == 112


def test_not_the_2012_table() -> None:
    assert us_epa_aqi("pm2_5", 12.0) == 56  # 2012 table: 50
    assert us_epa_aqi("pm2_5", 150.4) == 226  # 2012 table: 200


def test_above_500_extends_the_hazardous_line() -> None:
    # 199 / 99.9 * (c - 225.5) + 301: 325.5 -> 500.2, 325.7 -> 500.6, 500 -> 847.8
    assert us_epa_aqi("pm2_5", 325.5) == 500
    assert us_epa_aqi("pm2_5", 325.7) == 501
    assert us_epa_aqi("pm2_5", 500.0) == 848
    assert us_epa_aqi("pm10", 605) == 501  # 199 / 179 * 180 + 301 = 501.1
    assert us_epa_aqi("pm10", 1000) == 940  # 199 / 179 * 575 + 301 = 940.2


DAQI_EDGES = [
    (pollutant, top, index)
    for pollutant, tops in DAQI_TOP.items()
    for index, top in enumerate(tops, start=1)
]


@pytest.mark.parametrize(("pollutant", "top", "index"), DAQI_EDGES)
def test_daqi_band_edges_and_rounding(pollutant: str, top: int, index: int) -> None:
    assert uk_daqi(pollutant, top) == index
    assert uk_daqi(pollutant, top + 0.4) == index
    assert uk_daqi(pollutant, top + 0.5) == index + 1  # half up, not to even
    assert uk_daqi(pollutant, top + 1) == index + 1


def test_daqi_examples() -> None:
    assert uk_daqi("pm2_5", 11.4) == 1
    assert uk_daqi("pm2_5", 11.5) == 2
    assert uk_daqi("pm2_5", 0) == 1
    assert uk_daqi("pm2_5", 58.5) == 8  # banker's rounding would give 58 -> 7
    assert uk_daqi("pm10", 16.5) == 2  # banker's rounding would give 16 -> 1
    assert uk_daqi("pm2_5", 71) == 10
    assert uk_daqi("pm2_5", 1500) == 10
    assert uk_daqi("pm10", 100.4) == 9
    assert uk_daqi("pm10", 101) == 10


def test_categories_and_colours() -> None:
    assert us_epa_category(0) == ("Good", "#00E400")
    assert us_epa_category(50) == ("Good", "#00E400")
    assert us_epa_category(51) == ("Moderate", "#FFFF00")
    assert us_epa_category(101) == ("Unhealthy for Sensitive Groups", "#FF7E00")
    assert us_epa_category(200) == ("Unhealthy", "#FF0000")
    assert us_epa_category(201) == ("Very Unhealthy", "#8F3F97")
    assert us_epa_category(301) == ("Hazardous", "#7E0023")
    assert us_epa_category(848) == ("Hazardous", "#7E0023")
    assert uk_daqi_band(1) == ("Low", "#9CFF9C")
    assert uk_daqi_band(3) == ("Low", "#31CF00")
    assert uk_daqi_band(4) == ("Moderate", "#FFFF00")
    assert uk_daqi_band(6) == ("Moderate", "#FF9A00")
    assert uk_daqi_band(7) == ("High", "#FF6464")
    assert uk_daqi_band(9) == ("High", "#990000")
    assert uk_daqi_band(10) == ("Very High", "#CE30FF")


@pytest.mark.parametrize("bad", [-1, -0.1, float("nan"), float("inf"), None])
def test_invalid_scalar_raises_naming_the_value(bad: float | None) -> None:
    for function in (us_epa_aqi, uk_daqi):
        with pytest.raises(ValueError, match=re.escape(repr(bad))):
            function("pm2_5", bad)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match=r"'pm1'.*pm10, pm2_5"):
        us_epa_aqi("pm1", 10)
    with pytest.raises(ValueError, match="'o3'"):
        uk_daqi("o3", [1.0])
    with pytest.raises(TypeError):
        us_epa_aqi("pm2_5", True)
    with pytest.raises(ValueError, match="1-D"):
        us_epa_aqi("pm2_5", np.zeros((2, 2)))
    for bad in (-1, float("nan")):
        with pytest.raises(ValueError, match="AQI"):
            us_epa_category(bad)
    for bad in (0, 11, True):
        with pytest.raises(ValueError, match=repr(bad)):
            uk_daqi_band(bad)


def test_arrays_give_int64_with_nulls_for_invalid() -> None:
    expected = pa.array([50, 51, None, None, None, None, 100], type=pa.int64())
    raw = [9.0, 9.1, None, float("nan"), -3.0, float("inf"), 35.4]
    assert us_epa_aqi("pm2_5", raw).equals(expected)
    assert us_epa_aqi("pm2_5", tuple(raw)).equals(expected)
    assert us_epa_aqi("pm2_5", np.array(raw, dtype=float)).equals(expected)
    assert us_epa_aqi("pm2_5", pa.array(raw)).equals(expected)
    assert us_epa_aqi("pm2_5", pa.chunked_array([raw[:3], raw[3:]])).equals(expected)
    daqi = uk_daqi("pm10", pa.array([16, 17, None], type=pa.int32()))
    assert daqi.equals(pa.array([1, 2, None], type=pa.int64()))
    assert us_epa_aqi("pm10", []).equals(pa.array([], type=pa.int64()))


concentrations = st.floats(min_value=0, max_value=2500, allow_nan=False)
maybe_bad = st.one_of(concentrations, st.none(), st.just(float("nan")),
                      st.floats(max_value=-1e-6, allow_infinity=False))


@given(st.sampled_from(["pm2_5", "pm10"]), st.lists(maybe_bad, max_size=50))
def test_array_equals_scalar_per_element(pollutant: str, values: list[float | None]) -> None:
    for function in (us_epa_aqi, uk_daqi):
        got = function(pollutant, values).to_pylist()
        want = [
            None if v is None or not (v >= 0) else function(pollutant, v) for v in values
        ]
        assert got == want


@given(st.sampled_from(["pm2_5", "pm10"]), st.lists(concentrations, min_size=1, max_size=80))
def test_monotonic_non_decreasing(pollutant: str, values: list[float]) -> None:
    ordered = np.sort(np.array(values))
    for function in (us_epa_aqi, uk_daqi):
        result = function(pollutant, ordered).to_numpy()
        assert (np.diff(result) >= 0).all()
        assert (result >= (0 if function is us_epa_aqi else 1)).all()
