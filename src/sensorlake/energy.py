"""Energy from readings: per-reading deltas of a cumulative counter or of integrated power, and
their sums over buckets in local time. Everything works on polars frames, one pass per table.

A delta is the energy of the interval (previous reading, this reading]: it is *attributed to
the interval end*, the reading's timestamp. A bucket [a, b) holds the deltas whose interval
ends in (a, b], so a daily bucket is "counter at next midnight minus counter at midnight"
(the reading taken exactly at midnight closes the previous day). Daily and weekly buckets
follow the device's local calendar (23- and 25-hour days included); shorter ones are aligned
on the UTC epoch like stored buckets.

Counter rules (`energy`, kWh), per device in time order:
- rise: delta = value − previous (status `ok`; `gap` when the readings are further apart
  than the gap limit; the counter measured that energy, so it is kept, in the later bucket);
- rollover: the previous value is in the top ROLLOVER_BAND of the Cayenne LPP range and the
  new one in the bottom band: the counter wrapped at 2^32 Wh, delta = value + 4,294,967.296
  − previous (status `rollover`);
- a drop of at most the jitter tolerance: delta 0 (status `jitter`), not a reset;
- any other drop: the meter was replaced or reset and counts from 0, delta = value
  (status `reset`);
- the first reading of a device has no previous one: delta null (status `first`).

Power rule (`power`, W, when a device sends no counter): trapezoids, delta = (p_prev + p) / 2
× seconds / 3.6e6 kWh; an interval longer than the gap limit gets no energy (delta null,
status `gap`): a missing hour stays missing.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl

LPP_MAX_KWH = 4_294_967.295
"""The largest Cayenne LPP energy value: an unsigned 32-bit count of Wh."""
LPP_MODULUS_KWH = 4_294_967.296
"""2^32 Wh: what a wrapped counter lost."""
ROLLOVER_BAND = 0.01
"""A drop is a rollover when prev ≥ (1 − band) × max and new ≤ band × max."""
ONE_US = timedelta(microseconds=1)

STATUS_RANK = {"ok": 0, "first": 1, "jitter": 2, "rollover": 3, "reset": 4, "gap": 5,
               "no_tariff": 6, "no_factor": 7}
"""A bucket's status is its most notable reading's: no_factor > no_tariff > gap > reset >
rollover > jitter > first > ok."""

DELTA_COLUMNS = ("device_id", "ts", "delta", "status")


def _ordered(readings: pl.DataFrame) -> pl.DataFrame:
    """One reading per (device, ts) in time order, with the previous reading of the same
    device (`prev`, `prev_ts`; null on a device's first reading)."""
    frame = readings.select("device_id", "ts", "value").drop_nulls("value").sort(
        "device_id", "ts", maintain_order=True)
    same = pl.col("device_id") == pl.col("device_id").shift(1)
    frame = frame.filter(~(same & (pl.col("ts") == pl.col("ts").shift(1))).fill_null(False))
    return frame.with_columns(
        prev=pl.when(same).then(pl.col("value").shift(1)),
        prev_ts=pl.when(same).then(pl.col("ts").shift(1)))


def counter_deltas(readings: pl.DataFrame, max_gap: timedelta,
                   jitter_kwh: float = 0.01,
                   max_kwh: float = LPP_MAX_KWH,
                   modulus_kwh: float = LPP_MODULUS_KWH) -> pl.DataFrame:
    """DELTA_COLUMNS from `energy` readings (device_id, ts, value in kWh)."""
    frame = _ordered(readings)
    prev, prev_ts = pl.col("prev"), pl.col("prev_ts")
    drop = prev - pl.col("value")
    rollover = ((prev >= (1 - ROLLOVER_BAND) * max_kwh)
                & (pl.col("value") <= ROLLOVER_BAND * max_kwh))
    return frame.with_columns(
        delta=pl.when(prev.is_null()).then(None)
        .when(drop <= 0).then(-drop)
        .when(drop <= jitter_kwh).then(0.0)
        .when(rollover).then(pl.col("value") + modulus_kwh - prev)
        .otherwise(pl.col("value")),
        status=pl.when(prev.is_null()).then(pl.lit("first"))
        .when(drop <= 0).then(pl.when(pl.col("ts") - prev_ts > max_gap)
                              .then(pl.lit("gap")).otherwise(pl.lit("ok")))
        .when(drop <= jitter_kwh).then(pl.lit("jitter"))
        .when(rollover).then(pl.lit("rollover"))
        .otherwise(pl.lit("reset")),
    ).select(DELTA_COLUMNS)


def power_deltas(readings: pl.DataFrame, max_gap: timedelta) -> pl.DataFrame:
    """DELTA_COLUMNS from `power` readings (W): trapezoidal kWh, none across a long gap."""
    frame = _ordered(readings)
    prev = pl.col("prev")
    micros = (pl.col("ts") - pl.col("prev_ts")).dt.total_microseconds()
    too_long = micros > max_gap // ONE_US
    return frame.with_columns(
        delta=pl.when(prev.is_null() | too_long).then(None)
        .otherwise((prev + pl.col("value")) * micros.cast(pl.Float64) / 7.2e12),  # W·µs → kWh
        status=pl.when(prev.is_null()).then(pl.lit("first"))
        .when(too_long).then(pl.lit("gap")).otherwise(pl.lit("ok")),
    ).select(DELTA_COLUMNS)


def device_deltas(readings: pl.DataFrame, max_gap: timedelta,
                  jitter_kwh: float = 0.01) -> pl.DataFrame:
    """Deltas of every device: from its `energy` counter when it has one, else from `power`.

    `readings` has device_id, metric, ts, value (the store's series rows)."""
    energy = readings.filter(pl.col("metric") == "energy")
    counters = energy.get_column("device_id").unique()
    power = readings.filter((pl.col("metric") == "power")
                            & ~pl.col("device_id").is_in(counters.implode()))
    parts = [counter_deltas(energy, max_gap, jitter_kwh), power_deltas(power, max_gap)]
    return pl.concat(parts).sort("device_id", "ts")


def in_range(deltas: pl.DataFrame, start: datetime, end: datetime) -> pl.DataFrame:
    """Deltas whose interval ends in (start, end]: the lookback rows are dropped."""
    return deltas.filter((pl.col("ts") > start) & (pl.col("ts") <= end))


def with_buckets(deltas: pl.DataFrame, every: timedelta, timezone_of: dict[str, str],
                 column: str = "bucket") -> pl.DataFrame:
    """Add the UTC start of the bucket that holds each delta's interval end.

    Whole days (1d, 2d ...) and 1w (Monday) are local calendar buckets of the device's zone;
    other widths are floors on the UTC epoch."""
    moment = pl.col("ts") - ONE_US
    if every % timedelta(days=1) != timedelta(0):
        width = every // ONE_US
        micros = moment.dt.epoch("us")
        floor = (micros - micros % width).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
        return deltas.with_columns(floor.alias(column))
    days = every // timedelta(days=1)
    unit = "1w" if days == 7 else f"{days}d"
    zones = deltas.with_columns(pl.col("device_id").replace_strict(
        timezone_of, default="UTC", return_dtype=pl.String).alias("_tz"))
    parts = []
    for (tz,), part in zones.partition_by("_tz", as_dict=True, maintain_order=True).items():
        local = moment.dt.convert_time_zone(str(tz)).dt.truncate(unit)
        parts.append(part.with_columns(local.dt.convert_time_zone("UTC").alias(column)))
    if not parts:
        return deltas.with_columns(pl.lit(None, pl.Datetime("us", "UTC")).alias(column))
    return pl.concat(parts).drop("_tz")


def bucket_status(status: pl.Expr) -> pl.Expr:
    """The most notable status of a group (an aggregation expression)."""
    rank = status.replace_strict(STATUS_RANK, return_dtype=pl.Int8)
    return rank.max().replace_strict({v: k for k, v in STATUS_RANK.items()},
                                     return_dtype=pl.String)


def bucket_sums(frame: pl.DataFrame, every: timedelta, timezone_of: dict[str, str],
                value: str = "delta", keys: tuple[str, ...] = ()) -> pl.DataFrame:
    """Per (device, bucket[, keys]): value = sum of non-null `value`, count = how many,
    status = the most notable. Buckets whose readings are all null have value null."""
    bucketed = with_buckets(frame, every, timezone_of)
    return bucketed.group_by("device_id", "bucket", *keys, maintain_order=True).agg(
        pl.when(pl.col(value).count() > 0).then(pl.col(value).sum()).alias("value"),
        pl.col(value).count().cast(pl.Int64).alias("count"),
        bucket_status(pl.col("status")).alias("status"),
    ).rename({"bucket": "ts"}).sort("device_id", "ts")


def demand_peaks(deltas: pl.DataFrame, interval: timedelta,
                 timezone_of: dict[str, str]) -> pl.DataFrame:
    """The monthly demand peak per device: the highest average power (kW) of any demand
    interval (energy of the interval / its length) in each local calendar month.

    Columns: device_id, month (UTC start of the local month), peak_kw, peak_ts (UTC start of
    the peak interval), count (intervals with energy)."""
    hours = interval / timedelta(hours=1)
    per_interval = with_buckets(deltas.drop_nulls("delta"), interval, timezone_of, "slot") \
        .group_by("device_id", "slot").agg((pl.col("delta").sum() / hours).alias("kw"))
    zones = per_interval.with_columns(pl.col("device_id").replace_strict(
        timezone_of, default="UTC", return_dtype=pl.String).alias("_tz"))
    parts = []
    for (tz,), part in zones.partition_by("_tz", as_dict=True, maintain_order=True).items():
        month = pl.col("slot").dt.convert_time_zone(str(tz)).dt.truncate("1mo") \
            .dt.convert_time_zone("UTC")
        parts.append(part.with_columns(month.alias("month")))
    if not parts:
        return pl.DataFrame(schema={"device_id": pl.String, "month": pl.Datetime("us", "UTC"),
                                    "peak_kw": pl.Float64, "peak_ts": pl.Datetime("us", "UTC"),
                                    "count": pl.Int64})
    return pl.concat(parts).sort("device_id", "slot").group_by(
        "device_id", "month", maintain_order=True).agg(
        pl.col("kw").max().alias("peak_kw"),
        pl.col("slot").get(pl.col("kw").arg_max()).alias("peak_ts"),
        pl.len().cast(pl.Int64).alias("count"),
    ).sort("device_id", "month")
