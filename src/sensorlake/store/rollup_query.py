"""Range queries answered from rollups, and the choice of a grain.

`choose_grain` is the planner's rule (shared by `api/ranges.py` and the store): raw readings,
a quality filter or a width that is no multiple of a minute go to raw; `every=1d` / `1mo`
(calendar days and months in each device's zone) to `rollup_1d` / `rollup_1mo`; any other
multiple of an hour to `rollup_1h`, of a minute to `rollup_1m`.

Fixed grains give exactly the raw answer: the whole grain buckets inside [start, end) come
from the rollup, the partial ones at the edges from raw rows, and both are re-aggregated
into the `every` buckets (mean = sum(sum) / sum(count), min of min, max of max, first and
last by their timestamps). Calendar grains return the whole local days (months) whose start
lies in [start, end), from rollups or, with a quality filter, from raw (`calendar_raw_sql`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sensorlake.store.base import ReadingQuery
from sensorlake.store.query import DUCKDB, EPOCH, Part, _filters, source_sql, ts_literal, utc

CALENDAR_GRAINS = {"day": "1d", "month": "1mo"}
EPOCH_BUCKET = ("time_bucket(to_microseconds({us}::BIGINT), {col}, "
                "TIMESTAMPTZ '1970-01-01 00:00:00+00')")

ONE = {"mean": "mean", "min": "min", "max": "max", "sum": "sum",
       "count": "CAST(count AS DOUBLE)", "first": "first", "last": "last"}
"""The value of one rollup row per aggregate."""

MANY = {"mean": "sum(s) / sum(n)", "min": "min(mn)", "max": "max(mx)", "sum": "sum(s)",
        "count": "CAST(sum(n) AS DOUBLE)", "first": "arg_min(f, f_ts)",
        "last": "arg_max(l, l_ts)"}
"""The value of a bucket re-aggregated from partial aggregates."""


def _floor(at: datetime, width: timedelta) -> datetime:
    return EPOCH + ((utc(at) - EPOCH) // width) * width


def _ceil(at: datetime, width: timedelta) -> datetime:
    floor = _floor(at, width)
    return floor if floor == utc(at) else floor + width


def choose_grain(every: timedelta | None, calendar: str | None, exclude_quality: int,
                 start: datetime, end: datetime) -> str | None:
    """The rollup grain that answers this query exactly, or None for raw."""
    if every is None or exclude_quality:
        return None
    if calendar is not None:
        return CALENDAR_GRAINS[calendar]
    for grain, width in (("1h", timedelta(hours=1)), ("1m", timedelta(minutes=1))):
        if every % width == timedelta(0):
            if _ceil(start, width) >= _floor(end, width):
                return None  # no whole grain bucket inside: raw is as cheap
            return grain
    return None


def _grace(final_after: timedelta) -> str:
    return f"INTERVAL {int(final_after.total_seconds() * 1e6)} MICROSECONDS"


def _now(now: datetime) -> str:
    return ts_literal(int(utc(now).timestamp() * 1_000_000))


def _after(query: ReadingQuery, column: str) -> tuple[str, list[object]]:
    if query.after is None:
        return "", []
    return f" AND (device_id, metric, {column}) > (?, ?, ?)", list(query.after)


def calendar_sql(query: ReadingQuery, grain: str, final_after: timedelta,
                 now: datetime) -> tuple[str, list[object]]:
    """One row per stored local day/month starting in [start, end); extra columns
    coverage, revised, final."""
    where, params = _filters(query.tenant, query.metrics, query.device_ids, DUCKDB)
    where += ["bucket >= ?", "bucket < ?"]
    params += [utc(query.start), utc(query.end)]
    after, more = _after(query, "bucket")
    sql = (f"SELECT device_id, metric, bucket AS ts, {ONE[query.agg]} AS value, count, "
           f"coverage, revised, bucket_end + {_grace(final_after)} <= {_now(now)} AS final "
           f"FROM rollup_{grain} WHERE {' AND '.join(where)}{after} "
           "ORDER BY device_id, metric, ts LIMIT ?")
    return sql, [*params, *more, query.limit]


def fixed_sql(query: ReadingQuery, grain: str, edges: list[list[Part]],
              final_after: timedelta, now: datetime) -> tuple[str, list[object]]:
    """`every` buckets from whole `grain` rollup rows inside the range plus the raw rows of
    the partial grain buckets at its edges (`edges`: the parts of each edge range). When
    `every` is the grain, inner rows are served as stored (no re-aggregation)."""
    assert query.every is not None
    width = {"1m": timedelta(minutes=1), "1h": timedelta(hours=1)}[grain]
    inner_start, inner_end = _ceil(query.start, width), _floor(query.end, width)
    us = query.every // timedelta(microseconds=1)
    where, inner_params = _filters(query.tenant, query.metrics, query.device_ids, DUCKDB)
    where += ["bucket >= ?", "bucket < ?"]
    inner_params += [inner_start, inner_end]
    inner_where = " AND ".join(where)
    selects, params = [], []
    one_to_one = query.every == width
    if not one_to_one:
        selects.append(f"SELECT device_id, metric, {EPOCH_BUCKET.format(us=us, col='bucket')} "
                       "AS b, count AS n, sum AS s, min AS mn, max AS mx, first AS f, "
                       "first_ts AS f_ts, last AS l, last_ts AS l_ts, interval_s AS iv, "
                       f"revised AS rv FROM rollup_{grain} WHERE {inner_where}")
        params += inner_params
    for parts in edges:
        if not parts:
            continue
        src, more = source_sql(query, parts, DUCKDB)
        selects.append(f"SELECT device_id, metric, {EPOCH_BUCKET.format(us=us, col='ts')} AS b, "
                       "1 AS n, value AS s, value AS mn, value AS mx, value AS f, ts AS f_ts, "
                       "value AS l, ts AS l_ts, CAST(NULL AS DOUBLE) AS iv, FALSE AS rv "
                       f"FROM ({src}) e")
        params += more
    grace, at = _grace(final_after), _now(now)
    final = f"b + to_microseconds({us}::BIGINT) + {grace} <= {at}"
    outputs = []
    if one_to_one:
        outputs.append(f"SELECT device_id, metric, bucket AS ts, {ONE[query.agg]} AS value, "
                       f"count, coverage, revised, bucket_end + {grace} <= {at} AS final "
                       f"FROM rollup_{grain} WHERE {inner_where}")
    if selects:
        outputs.append(
            f"SELECT device_id, metric, b AS ts, {MANY[query.agg]} AS value, "
            "CAST(sum(n) AS BIGINT) AS count, "
            f"least(100.0, 100.0 * sum(n) * median(iv) / {us / 1e6}) AS coverage, "
            f"bool_or(rv) AS revised, {final} AS final "
            f"FROM ({' UNION ALL '.join(selects)}) p GROUP BY device_id, metric, b")
    all_params = [*(inner_params if one_to_one else []), *params]
    after, more = _after(query, "ts")
    sql = (f"SELECT * FROM ({' UNION ALL '.join(outputs)}) r WHERE TRUE{after} "
           "ORDER BY device_id, metric, ts LIMIT ?")
    return sql, [*all_params, *more, query.limit]


def edge_ranges(query: ReadingQuery, grain: str) -> list[tuple[datetime, datetime]]:
    """The partial grain buckets at the range's edges, as [start, end) ranges."""
    width = {"1m": timedelta(minutes=1), "1h": timedelta(hours=1)}[grain]
    start, end = utc(query.start), utc(query.end)
    inner_start, inner_end = _ceil(start, width), _floor(end, width)
    return [(a, b) for a, b in ((start, inner_start), (inner_end, end)) if a < b]


def calendar_raw_sql(query: ReadingQuery, parts: list[Part], calendar: str, tz: str
                     ) -> tuple[str, list[object]]:
    """Local days/months starting in [start, end) from raw rows (`parts` must reach a month
    past `end`); needs `rollup_devices` registered on the cursor."""
    unit = {"day": "1 day", "month": "1 month"}[calendar]
    src, params = source_sql(query, parts, DUCKDB)
    aggs = {"mean": "avg(value)", "min": "min(value)", "max": "max(value)",
            "sum": "sum(value)", "count": "CAST(count(*) AS DOUBLE)",
            "first": DUCKDB.first, "last": DUCKDB.last}
    after, more = _after(query, "bucket")
    sql = (f"WITH src AS ({src}), b AS (SELECT s.device_id, s.metric, "
           f"time_bucket(INTERVAL {unit}, s.ts, {tz}) AS bucket, s.ts, s.value FROM src s "
           "LEFT JOIN rollup_devices m ON m.tenant = ? AND m.device_id = s.device_id) "
           f"SELECT device_id, metric, bucket AS ts, {aggs[query.agg]} AS value, "
           "CAST(count(*) AS BIGINT) AS count FROM b WHERE bucket >= ? AND bucket < ?"
           f"{after} GROUP BY device_id, metric, bucket ORDER BY device_id, metric, ts LIMIT ?")
    return sql, [*params, query.tenant, utc(query.start), utc(query.end), *more, query.limit]


CALENDAR_REACH = {"day": timedelta(hours=26), "month": timedelta(days=32)}
"""Longer than any local day (25 h) or month (31 d): a day/month starting this long before
a minute cannot contain it."""


def dirty_cut(cur: object, query: ReadingQuery) -> datetime | None:
    """Where the rollups stop being current for this query: the start of the first `every`
    bucket (or local day/month) that may hold a minute still marked dirty, or None when no
    dirty minute is in the query's scope (tenant, devices, metrics, range)."""
    assert query.every is not None
    where, params = _filters(query.tenant, query.metrics, query.device_ids, DUCKDB)
    reach = CALENDAR_REACH.get(query.calendar or "", query.every)
    where += ["minute >= ?", "minute < ?"]
    params += [utc(query.start) - reach, utc(query.end)]
    found = cur.sql(f"SELECT min(minute) FROM rollup_dirty WHERE {' AND '.join(where)}",  # type: ignore[attr-defined]
                    params=params).fetchall()[0][0]
    if found is None:
        return None
    if query.calendar is not None:
        return utc(found) - reach
    return _floor(found, query.every)


def split_at(query: ReadingQuery, cut: datetime) -> tuple[ReadingQuery | None, ReadingQuery]:
    """(the rollup part before `cut`, or None; the raw part from `cut` on). Buckets never
    straddle `cut`: it is a bucket start (fixed widths) or before every day/month that may
    hold a dirty minute (calendars: each part keeps the days *starting* in its range)."""
    from dataclasses import replace

    cut = max(utc(query.start), min(utc(cut), utc(query.end)))
    head = replace(query, end=cut) if cut > utc(query.start) else None
    return head, replace(query, start=cut, rollup=None)
