"""The derived series on hourly means from a fake store: DAQI capture at 17 and 18 hours, the
daily AQI on a local day (DST days too), the dominant pollutant, the present-hour rule and one
store query for all devices."""

from __future__ import annotations

import math
from datetime import timedelta

from aqi_helpers import HOUR, T0, FakeStore, by_ts, hourly, request

from sensorlake.derived.air import (
    DAILY,
    DAQI,
    NOWCAST,
    daily_series,
    daqi_series,
    nowcast_series,
)
from sensorlake.derived.base import SERIES_COLUMNS, load_all
from sensorlake.derived.serve import split_metrics


def test_registered_with_their_columns() -> None:
    registry = load_all()
    for series in (NOWCAST, DAILY, DAQI):
        assert registry[series.name] is series
    assert split_metrics(("pm2_5", "aqi_us_nowcast", "aqi_uk_daqi")) == (
        ("pm2_5",), ("aqi_us_nowcast", "aqi_uk_daqi"))
    assert NOWCAST.lookback == 12 * HOUR and DAQI.lookback == 24 * HOUR
    assert NOWCAST.extra_columns == ("pollutant", "category", "colour", "status",
                                     "pm2_5_nowcast", "pm10_nowcast")


def test_nowcast_series_epa_example_and_dominant_pollutant() -> None:
    rows = (hourly("d", "pm2_5", [50, 80, 75, 90, 82, 53, 64, 74, 21, 10, 16, 13])
            + hourly("d", "pm10", [60] * 12)  # NowCast 60 -> AQI 53 < 66
            + hourly("e", "pm10", [200] * 12))  # PM10 only: 200 -> AQI 123
    store = FakeStore(rows)
    table = nowcast_series(request(store, ["d", "e", "no-pm"], T0 + 11 * HOUR,
                                   T0 + 12 * HOUR))
    assert len(store.queries) == 1  # one batch query for every device
    assert store.queries[0].start == T0 - HOUR and store.queries[0].every == HOUR
    assert table.schema.names[:5] == SERIES_COLUMNS.names
    d, e = table.to_pylist()  # a device without PM readings has no rows
    assert d | {"ts": None} == {
        "device_id": "d", "metric": "aqi_us_nowcast", "ts": None, "value": 66.0, "count": 12,
        "pollutant": "pm2_5", "category": "Moderate", "colour": "#FFFF00", "status": "ok",
        "pm2_5_nowcast": 17.4, "pm10_nowcast": 60.0}
    assert d["ts"] == T0 + 11 * HOUR
    assert (e["value"], e["pollutant"], e["category"], e["colour"]) == (
        123.0, "pm10", "Unhealthy for Sensitive Groups", "#FF7E00")
    assert e["pm2_5_nowcast"] is None


def test_nowcast_series_missing_recent_hours_is_insufficient_data() -> None:
    store = FakeStore(hourly("d", "pm2_5", [10.0] * 10 + [None, None, 12.0]))
    rows = by_ts(nowcast_series(request(store, ["d"], T0 + 9 * HOUR, T0 + 13 * HOUR)))
    assert rows[T0 + 9 * HOUR]["value"] == us(10.0)
    assert rows[T0 + 10 * HOUR]["status"] == "ok"  # c2, c3 present
    for at in (T0 + 11 * HOUR, T0 + 12 * HOUR):  # only one of the three most recent
        assert rows[at] | {"ts": None, "count": None} == {
            "device_id": "d", "metric": "aqi_us_nowcast", "ts": None, "value": None,
            "count": None, "pollutant": None, "category": None, "colour": None,
            "status": "insufficient data", "pm2_5_nowcast": None, "pm10_nowcast": None}


def us(c: float) -> float:
    from sensorlake.aqi import us_epa_aqi
    return float(us_epa_aqi("pm2_5", c))


def test_an_hour_below_three_quarters_of_its_readings_is_missing() -> None:
    rows = hourly("d", "pm2_5", [10.0] * 12) + hourly("d", "pm2_5", [400.0, 400.0],
                                                       start=T0 + 12 * HOUR, count=2)
    at = T0 + 13 * HOUR  # the last two hours have 2 of the usual 4 readings
    assert by_ts(nowcast_series(request(FakeStore(rows), ["d"], at, at + HOUR)))[at][
        "status"] == "insufficient data"
    counted = by_ts(nowcast_series(request(FakeStore(rows), ["d"], at, at + HOUR,
                                           hour_min_capture=0.5)))[at]
    assert counted["status"] == "ok" and counted["value"] > 300


def test_daqi_capture_17_hours_insufficient_18_hours_a_number() -> None:
    values: list[float | None] = [30.0] * 24
    for hour in range(7):
        values[hour] = None  # 17 valid hours in the window ending at hour 23
    store = FakeStore(hourly("d", "pm2_5", values) + hourly("d", "pm10", [40.0] * 10))
    at = T0 + 23 * HOUR
    row = by_ts(daqi_series(request(store, ["d"], at, at + HOUR)))[at]
    assert (row["value"], row["status"], row["category"], row["count"]) == (
        None, "insufficient data", None, 17)
    assert row["pm2_5_24h"] is None and row["pm10_24h"] is None  # PM10: 10 hours only
    values[6] = 36.0  # 18 valid hours: mean (17 * 30 + 36) / 18 = 30.33 -> 30 -> index 3
    store = FakeStore(hourly("d", "pm2_5", values))
    row = by_ts(daqi_series(request(store, ["d"], at, at + HOUR)))[at]
    assert (row["value"], row["status"], row["category"], row["colour"], row["count"]) == (
        3.0, "ok", "Low", "#31CF00", 18)
    assert math.isclose(row["pm2_5_24h"], (17 * 30 + 36) / 18)


def test_daqi_capture_follows_the_setting_and_band_edges() -> None:
    at = T0 + 23 * HOUR
    for mean, index, band in ((35.49, 3, "Low"), (35.5, 4, "Moderate"), (70.4, 9, "High"),
                              (70.5, 10, "Very High")):
        store = FakeStore(hourly("d", "pm2_5", [mean] * 24))
        row = by_ts(daqi_series(request(store, ["d"], at, at + HOUR)))[at]
        assert (row["value"], row["category"]) == (index, band), mean
    store = FakeStore(hourly("d", "pm2_5", [None] * 12 + [50.0] * 12))
    assert by_ts(daqi_series(request(store, ["d"], at, at + HOUR, daqi_min_capture=0.5)))[at][
        "value"] == 6.0


def test_daily_aqi_on_the_local_day() -> None:
    # New York's 23 November runs 05:00Z 23rd .. 05:00Z 24th
    values = [100.0] * 5 + [20.0] * 24 + [100.0] * 3
    store = FakeStore(hourly("ny", "pm2_5", values) + hourly("utc", "pm2_5", values))
    zones = {"ny": "America/New_York", "utc": "UTC"}
    table = daily_series(request(store, ["ny", "utc"], T0 + 6 * HOUR, T0 + 7 * HOUR, zones))
    assert len(store.queries) == 1
    rows = {(r["device_id"], r["ts"]): r for r in table.to_pylist()}
    ny = rows[("ny", T0 + 5 * HOUR)]
    assert (ny["value"], ny["pm2_5_24h"], ny["count"], ny["category"]) == (
        71.0, 20.0, 24, "Moderate")  # (49 / 26.3) x (20.0 - 9.1) + 51 = 71.3
    utc = rows[("utc", T0)]  # the UTC day mixes in the 100s: 5 x 100 + 19 x 20
    assert utc["pm2_5_24h"] == 36.6 and utc["value"] == 104.0
    assert len(rows) == 2


def test_daily_aqi_needs_18_of_24_and_counts_dst_days() -> None:
    values: list[float | None] = [10.0] * 17 + [None] * 7
    row = daily_series(request(FakeStore(hourly("d", "pm2_5", values)), ["d"], T0,
                               T0 + HOUR)).to_pylist()[0]
    assert (row["value"], row["status"], row["count"]) == (None, "insufficient data", 17)
    values[17] = 10.0
    row = daily_series(request(FakeStore(hourly("d", "pm2_5", values)), ["d"], T0,
                               T0 + HOUR)).to_pylist()[0]
    assert (row["value"], row["status"], row["count"]) == (us(10.0), "ok", 18)
    # London, 25 October 2026: 25 hours from 23:00Z on the 24th, so 19 hours are needed
    start = T0.replace(month=10, day=24, hour=23)
    zones = {"d": "Europe/London"}
    for present, status in ((18, "insufficient data"), (19, "ok")):
        store = FakeStore(hourly("d", "pm2_5", [10.0] * present, start=start))
        row = daily_series(request(store, ["d"], start, start + HOUR, zones)).to_pylist()[0]
        assert (row["ts"], row["status"]) == (start, status)
    spring = T0.replace(month=3, day=29, hour=0)  # 23 hours: 18 needed
    store = FakeStore(hourly("d", "pm2_5", [10.0] * 18, start=spring))
    row = daily_series(request(store, ["d"], spring, spring + timedelta(minutes=1),
                               zones)).to_pylist()[0]
    assert (row["ts"], row["status"]) == (spring, "ok")


def test_empty_requests() -> None:
    store = FakeStore([])
    for compute in (nowcast_series, daqi_series, daily_series):
        table = compute(request(store, [], T0, T0 + HOUR))
        assert table.num_rows == 0 and table.schema.names[:5] == SERIES_COLUMNS.names
    assert store.queries == []


def test_present_hours_rule() -> None:
    import polars as pl

    from sensorlake.derived.air import present_hours
    frame = pl.DataFrame(hourly("d", "pm2_5", [1.0] * 5, count=12)
                         + hourly("d", "pm2_5", [2.0, 3.0], start=T0 + 5 * HOUR, count=9)
                         + hourly("d", "pm2_5", [4.0], start=T0 + 7 * HOUR, count=8)
                         + hourly("h", "pm10", [5.0, None, 6.0], count=1))
    kept = present_hours(frame, 0.75)  # usual 12 an hour: 9 is enough, 8 is not
    assert kept.filter(pl.col("device_id") == "d")["value"].to_list() == [1.0] * 5 + [2.0, 3.0]
    assert kept.filter(pl.col("device_id") == "h")["value"].to_list() == [5.0, 6.0]
    assert present_hours(frame, 0.0).height == frame.height
