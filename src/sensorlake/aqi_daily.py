"""Daily means of hourly means on local calendar days, with the data-capture rule.

The US daily AQI for PM is the AQI of the 24-hour mean of a calendar day (EPA, Technical
Assistance Document for the Reporting of Daily Air Quality, 2024); the regulatory validity rule
for a daily mean from hourly values is 75 % of the hours (18 of 24; 40 CFR Part 50, Appendix N).
A local day is 23 or 25 hours long on DST days, so the needed hours come from the day's real
length: ceil(capture x hours), 18 of 23 and 19 of 25 at 75 %.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import polars as pl

from sensorlake.derived.timezones import zone

HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class LocalDay:
    day: date
    start: datetime
    """Local midnight, in UTC."""
    hours: int
    """Clock hours in the day: 24, or 23 / 25 on DST days."""


def local_days(zone_name: str, start: datetime, end: datetime) -> list[LocalDay]:
    """Every local calendar day of `zone_name` that overlaps [start, end)."""
    tz = zone(zone_name)
    first = start.astimezone(tz).date()
    last = (end - timedelta(microseconds=1)).astimezone(tz).date()
    days = []
    current = first
    while current <= last:
        begin = datetime.combine(current, time(0), tzinfo=tz).astimezone(UTC)
        after = datetime.combine(current + timedelta(days=1), time(0), tzinfo=tz).astimezone(UTC)
        days.append(LocalDay(current, begin, round((after - begin) / HOUR)))
        current += timedelta(days=1)
    return days


def needed_hours(capture: float, day_hours: int | pl.Expr) -> int | pl.Expr:
    """Hours of valid means a day of `day_hours` needs: ceil(capture x hours), at least 1."""
    if isinstance(day_hours, pl.Expr):
        return (day_hours * capture - 1e-9).ceil().clip(lower_bound=1).cast(pl.Int64)
    return max(1, math.ceil(day_hours * capture - 1e-9))


def daily_means(hourly: pl.DataFrame, zones: dict[str, str], start: datetime, end: datetime,
                capture: float) -> pl.DataFrame:
    """One row per (device_id, metric, local day overlapping [start, end)).

    `hourly` holds the *present* hourly means (device_id, metric, ts in UTC, value); `zones`
    maps each device to its IANA zone. Columns out: device_id, metric, ts (local midnight in
    UTC), mean (null below the capture rule), hours (valid hourly means in the day),
    day_hours, needed. Days of a (device, metric) without any hour are rows too (hours 0).
    """
    series = hourly.select("device_id", "metric").unique()
    grids = []
    for zone_name in sorted(set(zones.get(d, "UTC") for d in series["device_id"])):
        days = local_days(zone_name, start, end)
        grids.append(pl.DataFrame({
            "zone": [zone_name] * len(days), "day": [d.day for d in days],
            "ts": [d.start for d in days], "day_hours": [d.hours for d in days]},
            schema={"zone": pl.String, "day": pl.Date, "ts": pl.Datetime("us", "UTC"),
                    "day_hours": pl.Int64}))
    if not grids:
        return _empty()
    zone_of = pl.col("device_id").replace_strict(zones, default="UTC", return_dtype=pl.String)
    grid = series.with_columns(zone=zone_of).join(pl.concat(grids), on="zone")
    parts = [group.with_columns(day=pl.col("ts").dt.convert_time_zone(str(name)).dt.date())
             for (name,), group in hourly.with_columns(zone=zone_of)
             .partition_by("zone", as_dict=True).items()]
    sums = (pl.concat(parts).group_by("device_id", "metric", "day")
            .agg(mean=pl.col("value").mean(), hours=pl.col("value").count()))
    out = grid.join(sums, on=["device_id", "metric", "day"], how="left")
    needed = needed_hours(capture, pl.col("day_hours"))
    return (out.with_columns(hours=pl.col("hours").fill_null(0).cast(pl.Int64), needed=needed)
            .with_columns(mean=pl.when(pl.col("hours") >= pl.col("needed"))
                          .then(pl.col("mean")).otherwise(None))
            .select("device_id", "metric", "ts", "mean", "hours", "day_hours", "needed")
            .sort("device_id", "metric", "ts"))


def _empty() -> pl.DataFrame:
    return pl.DataFrame(schema={"device_id": pl.String, "metric": pl.String,
                                "ts": pl.Datetime("us", "UTC"), "mean": pl.Float64,
                                "hours": pl.Int64, "day_hours": pl.Int64,
                                "needed": pl.Int64})
