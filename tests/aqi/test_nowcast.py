"""EPA NowCast: the worked example, missing hours, and properties against a literal
implementation of EPA's steps."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sensorlake.aqi import us_epa_aqi, us_epa_truncate
from sensorlake.aqi_nowcast import nowcast, running_mean, valid_hours

NAN = math.nan
EPA_EXAMPLE = [50, 80, 75, 90, 82, 53, 64, 74, 21, 10, 16, 13]
"""EPA's "Computing the NowCast" example, oldest hour first: range 80, w* = 10/90 -> 0.5,
NowCast 17.4 µg/m³."""


def last(hours: list[float]) -> float:
    """The NowCast at the last hour of one series (oldest first)."""
    return float(nowcast(np.array([hours], dtype=np.float64))[0, -1])


def literal(hours: list[float]) -> float:
    """EPA's steps, one hour at a time: c1 is the most recent of the last 12."""
    c = list(reversed(hours[-12:]))
    if sum(1 for x in c[:3] if not math.isnan(x)) < 2:
        return NAN
    valid = [(i, x) for i, x in enumerate(c) if not math.isnan(x)]
    c_min, c_max = min(x for _, x in valid), max(x for _, x in valid)
    w = max(c_min / c_max, 0.5) if c_max > 0 else 1.0
    return sum(w ** i * x for i, x in valid) / sum(w ** i for i, _ in valid)


def test_epa_worked_example() -> None:
    value = last(EPA_EXAMPLE)
    numerator = sum(0.5 ** i * c for i, c in enumerate(reversed(EPA_EXAMPLE)))
    assert value == numerator / sum(0.5 ** i for i in range(12))
    assert round(value, 1) == 17.4
    assert us_epa_truncate("pm2_5", np.array([value]))[0] == 17.4
    assert us_epa_aqi("pm2_5", value) == 66  # Moderate under the 2024 table


def test_weight_above_the_floor() -> None:
    hours = [20.0, 22.0, 24.0, 25.0, 24.0, 23.0, 22.0, 21.0, 24.0, 25.0, 30.0, 28.0]
    w = 20 / 30  # c_min / c_max > 0.5: used as is
    expected = sum(w ** i * c for i, c in enumerate(reversed(hours))) / sum(
        w ** i for i in range(12))
    assert math.isclose(last(hours), expected, rel_tol=1e-12)


def test_constant_series_is_its_mean() -> None:
    assert last([12.0] * 12) == 12.0
    assert last([0.0] * 12) == 0.0  # c_max = 0: no division by zero


def test_a_one_hour_pulse() -> None:
    pulse = [0.0] * 11 + [71.0]
    assert math.isclose(last(pulse), 71 / sum(0.5 ** i for i in range(12)))
    assert us_epa_aqi("pm2_5", last(pulse)) == 101  # 35.508 -> 35.5
    assert us_epa_aqi("pm2_5", last([*pulse[1:], 0.0])) == 67  # one hour later: 17.75 -> 17.7


def test_missing_hours_drop_out_and_keep_their_exponent() -> None:
    hours = list(map(float, EPA_EXAMPLE))
    hours[-4] = NAN  # c4 missing
    hours[0] = NAN  # c12 missing
    c = list(reversed(hours))
    valid = [(i, x) for i, x in enumerate(c) if not math.isnan(x)]
    w = 0.5  # 10 / 90 is below the floor still
    expected = sum(w ** i * x for i, x in valid) / sum(w ** i for i, _ in valid)
    assert math.isclose(last(hours), expected, rel_tol=1e-12)


def test_two_of_the_three_most_recent_hours_must_exist() -> None:
    base = list(map(float, EPA_EXAMPLE))
    with_c1_missing = [*base[:-1], NAN]
    assert not math.isnan(last(with_c1_missing))  # c2, c3 present
    assert not math.isnan(last([*base[:-3], 10.0, NAN, 13.0]))  # c1, c3 present
    assert math.isnan(last([*base[:-2], NAN, NAN]))  # c1, c2 missing
    assert math.isnan(last([*base[:-3], NAN, NAN, 13.0]))  # only c1
    assert math.isnan(last([*base[:-3], NAN, 16.0, NAN]))  # only c2
    assert not math.isnan(last([NAN] * 10 + [16.0, 13.0]))  # only two hours at all: valid
    assert math.isclose(last([NAN] * 10 + [16.0, 13.0]), (13 + 0.8125 * 16) / 1.8125)


def test_windows_at_every_hour_and_short_history() -> None:
    series = np.array([[10.0, 20.0, NAN, 40.0] + [30.0] * 20])
    out = nowcast(series)[0]
    for j in range(series.shape[1]):
        expected = literal([NAN] * 11 + list(series[0, :j + 1]))
        assert (math.isnan(out[j]) and math.isnan(expected)) or math.isclose(out[j], expected)
    assert math.isnan(out[0])  # one hour of history: 1 of 3


def test_running_mean_capture_and_counts() -> None:
    hours = np.array([[10.0] * 6 + [NAN] * 7 + [20.0] * 11])  # 17 valid of 24
    assert math.isnan(running_mean(hours, 18)[0, -1])
    assert valid_hours(hours, 24)[0, -1] == 17
    hours[0, 6] = 10.0  # 18 valid
    assert running_mean(hours, 18)[0, -1] == (7 * 10 + 11 * 20) / 18
    assert valid_hours(hours, 24)[0, -1] == 18


hour_values = st.one_of(st.just(NAN), st.integers(0, 5000).map(lambda x: x / 10))


@settings(max_examples=300, deadline=None)
@given(st.lists(hour_values, min_size=1, max_size=40))
def test_matches_the_literal_steps_and_stays_within_the_hours(hours: list[float]) -> None:
    out = nowcast(np.array([hours]))[0]
    for j in range(len(hours)):
        window = ([NAN] * 11 + hours)[j:j + 12]
        expected = literal(window)
        if math.isnan(expected):
            assert math.isnan(out[j])
            continue
        assert math.isclose(out[j], expected, rel_tol=1e-12, abs_tol=1e-12)
        present = [x for x in window if not math.isnan(x)]
        assert min(present) - 1e-9 <= out[j] <= max(present) + 1e-9


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 5000).map(lambda x: x / 10),
       st.lists(st.booleans(), min_size=12, max_size=12).filter(
           lambda keep: sum(keep[-3:]) >= 2))
def test_constant_series_gives_that_constants_aqi(value: float, keep: list[bool]) -> None:
    hours = [value if k else NAN for k in keep]
    result = last(hours)
    assert math.isclose(result, value, rel_tol=1e-12, abs_tol=1e-12)
    assert us_epa_aqi("pm2_5", np.array([result])).to_pylist() == [us_epa_aqi("pm2_5", value)]
    assert us_epa_aqi("pm10", np.array([result])).to_pylist() == [us_epa_aqi("pm10", value)]


@settings(max_examples=200, deadline=None)
@given(st.lists(hour_values, min_size=1, max_size=60), st.integers(1, 24))
def test_running_mean_matches_the_literal_mean(hours: list[float], need: int) -> None:
    out = running_mean(np.array([hours]), need)[0]
    counts = valid_hours(np.array([hours]), 24)[0]
    for j in range(len(hours)):
        present = [x for x in hours[max(0, j - 23):j + 1] if not math.isnan(x)]
        assert counts[j] == len(present)
        if len(present) < need:
            assert math.isnan(out[j])
        else:
            assert math.isclose(out[j], sum(present) / len(present), rel_tol=1e-12,
                                abs_tol=1e-12)
