"""Time-range queries as the API takes them: range, bucket, aggregate, quality, paging.

`RangeParams` is the reusable query model of every range route (readings, exports);
`plan_range` turns it into a ReadingQuery and decides the resolution: `every=auto` picks
the bucket from STEPS so a chart gets about `api.auto_points` points per metric, and the
point cap (`api.max_points`) refuses a bucketed range that would return more (422 naming
a wide enough `every`). The plan names its source: "raw", or a rollup ("rollup_1m",
"rollup_1h", "rollup_1d", "rollup_1mo") when the store keeps them and one answers the query
exactly (store/rollup_query.py: choose_grain). `every=1d` and `every=1mo` are calendar days
and months in each device's local zone (docs/metrics.md#rollups).
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

import orjson
from fastapi import Query

from sensorlake.errors import InputError
from sensorlake.model import QUALITY_FLAGS, Quality
from sensorlake.store.base import AGGREGATES, ReadingQuery
from sensorlake.store.rollup_query import choose_grain
from sensorlake.timeparse import format_duration, parse_duration, parse_time

STEPS = [timedelta(seconds=s) for s in (1, 10, 60, 300, 900, 3600, 3 * 3600, 86400, 7 * 86400)]
"""Bucket widths `every=auto` chooses from."""

DAY = timedelta(days=1)
MONTH = timedelta(days=30)
"""`every=1mo` counts as 30 days for the point cap; its buckets are calendar months."""

GOOD_EXCLUDES = Quality.OUT_OF_RANGE | Quality.STUCK | Quality.SPIKE | Quality.CLOCK_SUSPECT
"""`quality=good` leaves out readings flagged with any of these."""


@dataclass
class RangeParams:
    """Query parameters shared by the range routes."""

    metric: Annotated[list[str], Query(description="One or more metrics, e.g. pm2_5",
                                       examples=["pm2_5"])]
    from_: Annotated[str, Query(alias="from", description="ISO 8601, epoch ms or -24h",
                                examples=["-24h"])] = "-1h"
    to: Annotated[str, Query(description="ISO 8601, epoch ms or now", examples=["now"])] = "now"
    every: Annotated[str | None, Query(
        description="Bucket width (1m, 1h; 1d and 1mo are local calendar days and months) or "
        "`auto` (about api.auto_points points)",
        examples=["1m"])] = None
    agg: Annotated[str, Query(description="mean, min, max, sum, count, first or last",
                              examples=["mean"])] = "mean"
    quality: Annotated[Literal["any", "good"], Query(
        description="good: leave out readings flagged out of range, stuck, spike or clock "
        "suspect")] = "any"
    exclude_flags: Annotated[str, Query(
        description="Leave out readings with any of these quality flags: names "
        "(`spike,stuck`) or an integer mask (`6`)", examples=["spike,stuck"])] = "0"
    flags: Annotated[str | None, Query(
        description="Only readings with any of these quality flags: names "
        "(`spike,stuck`) or an integer mask", examples=["spike,stuck"])] = None
    include: Annotated[list[str] | None, Query(
        description="`quality`: add each raw reading's `quality` bits and their names "
        "(`flags`) to the rows", examples=["quality"])] = None
    limit: Annotated[int | None, Query(ge=1, le=1_000_000, description="Most rows (at most "
                                       "api.max_points; default that)")] = None
    page: Annotated[str | None, Query(description="`meta.next` of the previous page")] = None


@dataclass(frozen=True)
class RangePlan:
    query: ReadingQuery
    source: str
    """Where the rows come from: "raw" (hot store + lake) or "rollup_<grain>"."""


def encode_cursor(device_id: str, metric: str, ts: datetime) -> str:
    us = (ts.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    return base64.urlsafe_b64encode(orjson.dumps([device_id, metric, us])).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[str, str, datetime]:
    try:
        device_id, metric, us = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text)
                                                                                    % 4)))
        at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(us))
        return str(device_id), str(metric), at
    except (ValueError, TypeError, OverflowError):
        raise InputError(f"page '{text[:40]}' is not a `meta.next` value of this API") from None


def auto_every(start: datetime, end: datetime, target: int) -> timedelta:
    """The narrowest STEPS width giving at most `target` buckets over [start, end)."""
    span = end - start
    for step in STEPS:
        if span / step <= target:
            return step
    return STEPS[-1]


def build_query(tenant: str, devices: tuple[str, ...] | None, metrics: list[str], start: str,
                end: str, every: str | None, agg: str, limit: int,
                auto_points: int = 600) -> ReadingQuery:
    """The one place that turns user input into a ReadingQuery (API and CLI)."""
    if agg not in AGGREGATES:
        raise InputError(f"unknown aggregate '{agg}': use one of {', '.join(AGGREGATES)}")
    if not metrics or any(not m.strip() for m in metrics):
        raise InputError("name at least one metric, e.g. metric=pm2_5")
    now = datetime.now(UTC)
    start_at, end_at = parse_time(start, now), parse_time(end, now)
    if end_at <= start_at:
        raise InputError(f"empty range: 'to' ({end_at.isoformat()}) must be after 'from' "
                         f"({start_at.isoformat()})")
    step: timedelta | None = None
    calendar: str | None = None
    if every == "auto":
        step = auto_every(start_at, end_at, auto_points)
    elif every and every.strip() == "1mo":
        step, calendar = MONTH, "month"
    elif every:
        step = parse_duration(every)
    if step == DAY:
        calendar = "day"
    return ReadingQuery(tenant=tenant, metrics=tuple(metrics), start=start_at, end=end_at,
                        device_ids=devices, every=step, agg=agg, limit=limit,  # type: ignore[arg-type]
                        calendar=calendar)  # type: ignore[arg-type]


def plan_range(tenant: str, devices: tuple[str, ...] | None, params: RangeParams,
               max_points: int, auto_points: int, device_count: int,
               rollups: bool = False) -> RangePlan:
    """The query of a range route, within the point cap (InputError names the fix), and its
    source: a rollup when `rollups` (the store keeps them) and one answers exactly."""
    limit = params.limit or max_points
    if limit > max_points:
        raise InputError(f"limit {limit} is over the cap of {max_points} points per response "
                         "(api.max_points): page with `meta.next`, or bucket with `every`")
    query = build_query(tenant, devices, params.metric, params.from_, params.to, params.every,
                        params.agg, limit, auto_points)
    if query.every is not None:
        buckets = math.ceil((query.end - query.start) / query.every)
        points = buckets * len(query.metrics) * max(device_count, 1)
        if points > max_points:
            per_series = max(1, max_points // (len(query.metrics) * max(device_count, 1)))
            wider = auto_every(query.start, query.end, per_series)
            raise InputError(
                f"every={format_duration(query.every)} over this range gives up to {points} "
                f"points, over the cap of {max_points} (api.max_points): ask for "
                f"every={format_duration(wider)} or a shorter range")
    exclude = parse_flags(params.exclude_flags, "exclude_flags") | (
        GOOD_EXCLUDES if params.quality == "good" else 0)
    require = parse_flags(params.flags, "flags") if params.flags else 0
    with_quality = wants_quality(params.include)
    if with_quality and query.every is not None:
        raise InputError("include=quality gives the flags of raw readings: leave out `every`, "
                         "or filter the readings that enter the buckets with flags= or "
                         "exclude_flags=")
    after = decode_cursor(params.page) if params.page else None
    grain = choose_grain(query.every, query.calendar, exclude | require, query.start,
                         query.end) if rollups else None
    if query.calendar == "month" and not rollups:
        raise InputError("every=1mo needs the rollups of the embedded store (rollups.enabled) "
                         "and no quality filter: ask for every=1d and add the days up")
    query = ReadingQuery(**{**query.__dict__, "exclude_quality": exclude, "after": after,
                            "require_quality": require, "with_quality": with_quality,
                            "rollup": grain})
    return RangePlan(query, f"rollup_{grain}" if grain else "raw")


def parse_flags(text: str, parameter: str) -> int:
    """A quality mask from flag names and/or integers, comma separated (`spike,stuck`, `6`,
    `spike,16`); InputError names the unknown part and the valid names."""
    mask = 0
    for part in (p.strip().lower() for p in text.split(",")):
        if not part:
            continue
        if part.isdigit() and int(part) <= 32767:
            mask |= int(part)
        elif part in QUALITY_FLAGS:
            mask |= QUALITY_FLAGS[part]
        else:
            raise InputError(f"{parameter}: '{part[:40]}' is not a quality flag: use "
                             f"{', '.join(QUALITY_FLAGS)} or an integer mask (0-32767)")
    return mask


def wants_quality(include: list[str] | None) -> bool:
    """True when `include` asks for the quality column; InputError on anything else."""
    names = {p.strip() for item in include or [] for p in item.split(",") if p.strip()}
    unknown = names - {"quality"}
    if unknown:
        raise InputError(f"include: unknown column '{sorted(unknown)[0][:40]}': use quality")
    return "quality" in names
