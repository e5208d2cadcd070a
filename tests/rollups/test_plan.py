"""The planner picks raw or a rollup from `every`, the range, the aggregate and the quality
filter; a store without rollups (server mode) always reads raw; rollup answers equal raw."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rollup_support import Clock, make_store, table

from sensorlake.api.ranges import RangeParams, plan_range
from sensorlake.errors import InputError
from sensorlake.registry import Device
from sensorlake.store.base import ReadingQuery
from sensorlake.store.rollup_query import choose_grain

T0 = datetime(2026, 10, 20, tzinfo=UTC)


def plan(every: str | None, rollups: bool = True, start: str = "2026-10-20T00:00:30Z",
         end: str = "2026-10-27T00:00:00Z", **more: object) -> tuple[str, ReadingQuery]:
    params = RangeParams(metric=["pm2_5"], from_=start, to=end, every=every, **more)
    planned = plan_range("t", ("lon",), params, 1_000_000, 600, 1, rollups=rollups)
    return planned.source, planned.query


@pytest.mark.parametrize(("every", "source"), [
    (None, "raw"), ("10s", "raw"), ("90s", "raw"), ("1m", "rollup_1m"), ("15m", "rollup_1m"),
    ("1h", "rollup_1h"), ("6h", "rollup_1h"), ("1d", "rollup_1d"), ("1mo", "rollup_1mo"),
    ("2d", "rollup_1h"), ("1w", "rollup_1h")])
def test_source_from_every(every: str | None, source: str) -> None:
    assert plan(every)[0] == source


def test_quality_filter_and_stores_without_rollups_read_raw() -> None:
    assert plan("1h", quality="good")[0] == "raw"
    assert plan("1h", exclude_flags="4")[0] == "raw"
    assert plan("1h", flags="spike")[0] == "raw"
    assert plan("1h", rollups=False)[0] == "raw"
    assert plan("1d", rollups=False)[1].calendar == "day"
    with pytest.raises(InputError, match="every=1mo"):
        plan("1mo", rollups=False)
    # a range inside one hour has no whole 1h bucket: raw
    assert choose_grain(timedelta(hours=1), None, 0, T0 + timedelta(minutes=5),
                        T0 + timedelta(minutes=50)) is None


def test_rollup_answers_equal_raw_with_partial_edges(tmp_path: Path) -> None:
    devices = [Device(id="lon", tenant="t", tags={"tz": "Europe/London"}),
               Device(id="kol", tenant="t", tags={"tz": "Asia/Kolkata"})]
    store = make_store(tmp_path / "h.duckdb", devices, Clock(datetime(2026, 12, 1, tzinfo=UTC)))
    rows = [(d, "pm2_5", T0 + timedelta(seconds=47 * i), float((i * 7919) % 101))
            for i in range(20_000) for d in ("lon", "kol")]
    store.write(table(rows))
    start, end = T0 + timedelta(hours=2, seconds=17), T0 + timedelta(days=8, minutes=3, seconds=5)
    for refreshed in (False, True):  # dirty minutes are read from raw until the refresh
        if refreshed:
            store.refresh_rollups()
        for every, calendar in ((timedelta(minutes=5), None), (timedelta(hours=2), None),
                                (timedelta(days=1), "day"), (timedelta(days=30), "month")):
            for agg in ("mean", "min", "max", "sum", "count", "first", "last"):
                query = ReadingQuery("t", ("pm2_5",), start, end, every=every, agg=agg,
                                     calendar=calendar)  # type: ignore[arg-type]
                grain = choose_grain(every, calendar, 0, start, end)
                assert grain is not None
                raw = store.readings(query)
                rolled = store.readings(replace(query, rollup=grain))
                assert rolled.column("ts").equals(raw.column("ts")), (every, agg)
                assert rolled.column("count").equals(raw.column("count")), (every, agg)
                for got, want in zip(rolled.column("value").to_pylist(),
                                     raw.column("value").to_pylist(), strict=True):
                    assert got == pytest.approx(want, rel=1e-9, abs=1e-9), (every, agg)
                assert refreshed <= ({"coverage", "revised", "final"} <= set(
                    rolled.column_names))
    store.close()


def test_paging_through_rollup_rows(tmp_path: Path) -> None:
    store = make_store(tmp_path / "h.duckdb", [], Clock(datetime(2026, 12, 1, tzinfo=UTC)))
    store.write(table([("d", "pm2_5", T0 + timedelta(minutes=i), float(i)) for i in range(600)]))
    query = ReadingQuery("t", ("pm2_5",), T0, T0 + timedelta(hours=10), every=timedelta(hours=1),
                         limit=4, rollup="1h")
    first = store.readings(query)
    last = first.slice(3).to_pylist()[0]
    rest = store.readings(replace(query, after=("d", "pm2_5", last["ts"]), limit=100))
    assert first.num_rows == 4 and rest.num_rows == 6
    assert rest.column("ts")[0].as_py() == T0 + timedelta(hours=4)
    store.close()


def test_a_partly_dirty_range_reads_rollups_before_the_first_dirty_bucket(
        tmp_path: Path) -> None:
    """No refresh on read: buckets before the oldest dirty minute in scope come from the
    rollup (with coverage), the rest from raw; together they equal raw."""
    store = make_store(tmp_path / "h.duckdb", [Device(id="d", tenant="t")],
                       Clock(datetime(2026, 12, 1, tzinfo=UTC)))
    store.write(table([("d", "pm2_5", T0 + timedelta(minutes=i), float(i)) for i in range(600)]))
    store.refresh_rollups()
    late = T0 + timedelta(hours=6, seconds=30)  # a late reading into an old hour
    store.write(table([("d", "pm2_5", late, 1000.0)]))
    query = ReadingQuery("t", ("pm2_5",), T0, T0 + timedelta(hours=10), every=timedelta(hours=1),
                         agg="mean", rollup="1h")
    rolled, raw = store.readings(query), store.readings(replace(query, rollup=None))
    assert rolled.column("count").equals(raw.column("count"))
    assert rolled.column("value").to_pylist() == pytest.approx(raw.column("value").to_pylist())
    coverage = rolled.column("coverage").to_pylist()
    assert all(c is not None for c in coverage[:6]) and all(c is None for c in coverage[6:])
    store.refresh_rollups()
    assert all(c is not None for c in store.readings(query).column("coverage").to_pylist())


def test_a_backlog_refreshes_in_chunks_of_whole_keys(tmp_path: Path) -> None:
    """With max_marks, each refresh takes whole (device, metric) keys up to about that many
    marks; after the last chunk the rollups equal a refresh in one go."""
    devices = [Device(id=f"d{i}", tenant="t") for i in range(5)]
    chunked = make_store(tmp_path / "a.duckdb", devices, Clock(datetime(2026, 12, 1, tzinfo=UTC)))
    whole = make_store(tmp_path / "b.duckdb", devices, Clock(datetime(2026, 12, 1, tzinfo=UTC)))
    rows = [(f"d{i}", "pm2_5", T0 + timedelta(minutes=m), float(m % 13))
            for i in range(5) for m in range(300)]
    for store in (chunked, whole):
        store.write(table(rows))
    results = []
    while True:
        results.append(chunked.refresh_rollups(max_marks=600))
        if not results[-1].left:
            break
    assert [r.minutes for r in results] == [600, 600, 300] and results[0].left == 900
    whole.refresh_rollups()
    for grain in ("1m", "1h", "1d", "1mo"):
        a, b = chunked.rollup_rows(grain), whole.rollup_rows(grain)
        keep = ["tenant", "device_id", "metric", "bucket", "count", "sum", "revised"]
        assert a.select(keep).equals(b.select(keep)), grain
        assert not any(a.column("revised").to_pylist()), grain
    chunked.close()
    whole.close()
