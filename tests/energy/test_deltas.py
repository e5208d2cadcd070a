"""Energy deltas: counter resets, the Cayenne LPP rollover, jitter, gaps, power integration,
local-day buckets on both DST days of Europe/London, monthly demand peaks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensorlake.energy import (
    LPP_MAX_KWH,
    bucket_sums,
    counter_deltas,
    demand_peaks,
    device_deltas,
    in_range,
    power_deltas,
)

HOUR = timedelta(hours=1)
GAP = timedelta(minutes=65)
LONDON = {"m": "Europe/London"}


def frame(values: list[float], start: datetime, step: timedelta = HOUR, device: str = "m",
          skip: tuple[int, ...] = ()) -> pl.DataFrame:
    rows = [(device, start + i * step, float(v)) for i, v in enumerate(values) if i not in skip]
    return pl.DataFrame(rows, schema={"device_id": pl.String, "ts": pl.Datetime("us", "UTC"),
                                      "value": pl.Float64}, orient="row")


T0 = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)


def test_rises_resets_and_first_reading() -> None:
    deltas = counter_deltas(frame([100.0, 101.5, 103.0, 0.4, 1.4], T0), GAP)
    assert deltas["delta"].to_list()[1:] == pytest.approx([1.5, 1.5, 0.4, 1.0])
    assert deltas["delta"][0] is None
    assert deltas["status"].to_list() == ["first", "ok", "ok", "reset", "ok"]


def test_rollover_at_the_lpp_maximum() -> None:
    before = LPP_MAX_KWH - 0.495  # 4,294,966.800
    deltas = counter_deltas(frame([before - 1.0, before, 0.705, 1.705], T0), GAP)
    assert deltas["status"].to_list() == ["first", "ok", "rollover", "ok"]
    # 0.495 kWh to the maximum, 0.001 to wrap to 0, then 0.705: 1.201 kWh
    assert deltas["delta"].to_list()[1:] == pytest.approx([1.0, 1.201, 1.0])


def test_a_drop_far_from_the_maximum_is_a_reset_and_small_drops_are_jitter() -> None:
    deltas = counter_deltas(frame([5000.0, 5000.004, 5000.0, 20.0], T0), GAP)
    assert deltas["status"].to_list() == ["first", "ok", "jitter", "reset"]
    assert deltas["delta"].to_list()[1:] == pytest.approx([0.004, 0.0, 20.0])


def test_a_missing_hour_of_a_counter_keeps_its_energy_and_flags_the_gap() -> None:
    readings = frame([float(i) for i in range(6)], T0, skip=(3,))  # 03:00 never came
    deltas = counter_deltas(readings, GAP)
    assert deltas["status"].to_list() == ["first", "ok", "ok", "gap", "ok"]
    hourly = bucket_sums(in_range(deltas, T0, T0 + 6 * HOUR), HOUR, LONDON)
    # the hour ending 03:00 has no row (nothing is invented); the next holds both hours
    assert hourly["ts"].to_list() == [T0, T0 + HOUR, T0 + 3 * HOUR, T0 + 4 * HOUR]
    assert hourly["value"].to_list() == pytest.approx([1.0, 1.0, 2.0, 1.0])
    assert hourly["status"].to_list() == ["ok", "ok", "gap", "ok"]
    assert hourly["value"].sum() == pytest.approx(5.0)


def test_power_is_integrated_by_trapezoids_and_not_across_a_gap() -> None:
    minute = timedelta(minutes=15)
    watts = [1000.0, 3000.0, 3000.0, 3000.0, 1000.0, 1000.0]
    deltas = power_deltas(frame(watts, T0, minute, skip=(4,)), timedelta(minutes=20))
    # 15 min at (1 + 3) / 2 kW = 0.5 kWh; 15 min at 3 kW = 0.75 kWh; then 30 min: gap
    assert deltas["delta"].to_list()[1:3] == pytest.approx([0.5, 0.75])
    assert deltas["status"].to_list() == ["first", "ok", "ok", "ok", "gap"]
    assert deltas["delta"][4] is None


def test_a_device_with_a_counter_ignores_its_power_readings() -> None:
    counter = frame([1.0, 2.0], T0).with_columns(metric=pl.lit("energy"))
    power = frame([500.0, 500.0], T0).with_columns(metric=pl.lit("power"))
    other = frame([2000.0, 2000.0], T0, device="p").with_columns(metric=pl.lit("power"))
    deltas = device_deltas(pl.concat([counter, power, other]), GAP)
    assert deltas.drop_nulls("delta").rows() == [("m", T0 + HOUR, 1.0, "ok"),
                                                 ("p", T0 + HOUR, 2.0, "ok")]


@pytest.mark.parametrize(("day", "hours"), [(datetime(2026, 3, 29), 23),
                                            (datetime(2026, 10, 25), 25)])
def test_daily_energy_on_both_dst_days(day: datetime, hours: int) -> None:
    """1 kWh every UTC hour: the local day of the change has 23 or 25 of them."""
    start = day.replace(tzinfo=UTC) - timedelta(days=1)
    readings = frame([float(i) for i in range(24 * 3 + 1)], start)
    deltas = in_range(counter_deltas(readings, GAP), start, start + timedelta(days=3))
    daily = bucket_sums(deltas, timedelta(days=1), LONDON)
    by_day = dict(zip(daily["ts"], daily["value"], strict=True))
    midnight = {datetime(2026, 3, 29): datetime(2026, 3, 29, 0, tzinfo=UTC),
                datetime(2026, 10, 25): datetime(2026, 10, 24, 23, tzinfo=UTC)}[day]
    assert by_day[midnight] == pytest.approx(hours)
    assert daily["count"].to_list()[1] == hours


def test_weekly_buckets_start_on_local_monday() -> None:
    start = datetime(2026, 3, 23, 0, tzinfo=UTC)  # Monday 23 March 00:00 in London (GMT)
    readings = frame([float(i) for i in range(24 * 8 + 1)], start)
    weekly = bucket_sums(in_range(counter_deltas(readings, GAP), start,
                                  start + timedelta(days=8)), timedelta(days=7), LONDON)
    # the week of the spring change has 167 hours
    assert weekly["ts"][0] == datetime(2026, 3, 23, 0, tzinfo=UTC)
    assert weekly["value"][0] == pytest.approx(167.0)


def test_demand_peak_is_the_highest_interval_average_per_local_month() -> None:
    quarter = timedelta(minutes=15)
    start = datetime(2026, 10, 31, 22, 0, tzinfo=UTC)
    # 0.5 kWh per quarter (2 kW), one quarter of 1.5 kWh (6 kW) on 1 Nov, 1 kWh (4 kW) in Oct
    steps = [0.5] * 16
    steps[2], steps[12] = 1.0, 1.5
    values = [100.0]
    for step in steps:
        values.append(values[-1] + step)
    deltas = counter_deltas(frame(values, start, quarter), GAP)
    peaks = demand_peaks(deltas, quarter, {"m": "UTC"})
    assert peaks["month"].to_list() == [datetime(2026, 10, 1, tzinfo=UTC),
                                        datetime(2026, 11, 1, tzinfo=UTC)]
    assert peaks["peak_kw"].to_list() == pytest.approx([4.0, 6.0])
    assert peaks["peak_ts"][1] == start + 12 * quarter  # the interval (12q, 13q]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=50, allow_nan=False), min_size=1,
                max_size=60), st.floats(min_value=0, max_value=1e6))
def test_deltas_sum_to_last_minus_first_without_resets(steps: list[float],
                                                       first: float) -> None:
    values = [first]
    for step in steps:
        values.append(values[-1] + step)
    deltas = counter_deltas(frame(values, T0, timedelta(minutes=10)), GAP)
    assert deltas["delta"].sum() == pytest.approx(values[-1] - values[0], abs=1e-6)
    assert set(deltas["status"].to_list()) <= {"first", "ok"}


def test_a_missing_hour_of_power_stays_missing() -> None:
    """1 kW every 15 min; 10:15-11:00 never came: the 75 minutes 10:00-11:15 get no energy."""
    quarter = timedelta(minutes=15)
    readings = frame([1000.0] * 97, T0, quarter, skip=(41, 42, 43, 44))
    deltas = in_range(power_deltas(readings, GAP), T0, T0 + timedelta(days=1))
    hourly = bucket_sums(deltas, HOUR, {"m": "UTC"})
    at = {ts: (value, status) for ts, value, status in hourly.select("ts", "value", "status")
          .iter_rows()}
    assert T0 + 10 * HOUR not in at                   # nothing ends in 10:00-11:00
    assert at[T0 + 11 * HOUR] == (pytest.approx(0.75), "gap")
    assert at[T0 + 9 * HOUR] == (pytest.approx(1.0), "ok")
    assert hourly["value"].sum() == pytest.approx(24 - 1.25)


def test_demand_months_are_local_calendar_months() -> None:
    """The 6 kW quarter at 23:30 UTC on 30 June is 00:30 BST on 1 July: July's peak."""
    quarter = timedelta(minutes=15)
    start = datetime(2026, 6, 30, 22, 0, tzinfo=UTC)
    values = [0.0]
    for i in range(12):
        values.append(values[-1] + (1.5 if i == 6 else 0.5))  # interval (23:30, 23:45]
    deltas = counter_deltas(frame(values, start, quarter), GAP)
    local = demand_peaks(deltas, quarter, LONDON)
    assert local["month"].to_list() == [datetime(2026, 5, 31, 23, tzinfo=UTC),
                                        datetime(2026, 6, 30, 23, tzinfo=UTC)]
    assert local["peak_kw"].to_list() == pytest.approx([2.0, 6.0])
    in_utc = demand_peaks(deltas, quarter, {"m": "UTC"})
    assert in_utc["peak_kw"].to_list() == pytest.approx([6.0, 2.0])
