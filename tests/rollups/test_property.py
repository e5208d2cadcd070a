"""Rollups equal the raw aggregate at every grain, whatever the order, lateness and
repetition of the batches; replaying changes nothing and never sets `revised`."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rollup_support import Clock, assert_equal_to_raw, make_store, table

from sensorlake.registry import Device
from sensorlake.store.base import ReadingQuery
from sensorlake.store.duckdb import DuckDBStore
from sensorlake.store.rollup_query import choose_grain
from sensorlake.timeparse import parse_duration

ZONES = {"lon": "Europe/London", "kol": "Asia/Kolkata", "adl": "Australia/Adelaide",
         "utc": "UTC"}
DEVICES = [Device(id=d, tenant="t", tags={"tz": z}) for d, z in ZONES.items()]
START = datetime(2026, 10, 24, 12, tzinfo=UTC)  # spans London's 25-hour day and a month end
SPAN_S = 9 * 86400

reading = st.tuples(st.sampled_from(sorted(ZONES)), st.sampled_from(["pm2_5", "co2"]),
                    st.integers(0, SPAN_S).map(lambda s: START + timedelta(seconds=s)),
                    st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(st.lists(reading, min_size=1, max_size=40), min_size=1, max_size=6),
       refresh_after=st.lists(st.booleans(), min_size=6, max_size=6),
       replay=st.lists(st.integers(0, 5), max_size=3))
def test_rollups_equal_raw_aggregate(batches: list, refresh_after: list[bool],
                                     replay: list[int]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        clock = Clock(START + timedelta(days=60))  # everything is final: replays would show
        store = make_store(Path(folder) / "hot.duckdb", DEVICES, clock)
        try:
            written: list = []
            for index, batch in enumerate(batches):  # random order = late data included
                store.write(table(batch))
                written.extend(batch)
                if refresh_after[index]:
                    store.refresh_rollups()
            for index in replay:  # duplicated / replayed batches
                if index < len(batches):
                    store.write(table(batches[index]))
            store.refresh_rollups()
            assert_equal_to_raw(store, written, ZONES)
            before = {g: store.rollup_rows(g).drop_columns(["updated_at"])
                      for g in ("1m", "1h", "1d", "1mo")}
            for batch in batches:  # the whole input again
                store.write(table(batch))
            store.refresh_rollups()
            for grain, rows in before.items():
                after = store.rollup_rows(grain).drop_columns(["updated_at"])
                assert after.equals(rows), grain
        finally:
            store.close()


@settings(max_examples=15, deadline=None)
@given(first=st.lists(reading, min_size=1, max_size=30))
def test_duplicates_never_revise(first: list) -> None:
    with tempfile.TemporaryDirectory() as folder:
        clock = Clock(START + timedelta(days=60))
        store = make_store(Path(folder) / "hot.duckdb", DEVICES, clock)
        try:
            store.write(table(first))
            store.refresh_rollups()
            store.write(table([(d, m, ts, v + 1) for d, m, ts, v in first]))  # same keys
            store.refresh_rollups()
            for grain in ("1m", "1h", "1d", "1mo"):
                assert not any(store.rollup_rows(grain).column("revised").to_pylist())
            assert_equal_to_raw(store, first, ZONES)
        finally:
            store.close()


QUERY_ROWS = [(d, "pm2_5", START + timedelta(seconds=s), float((s * 31) % 97) - 40)
              for d in ZONES for s in range(0, 6 * 86400, 173)]


@pytest.fixture(scope="module")
def query_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DuckDBStore]:
    store = make_store(tmp_path_factory.mktemp("q") / "hot.duckdb", DEVICES,
                       Clock(START + timedelta(days=60)))
    store.write(table(QUERY_ROWS))
    store.refresh_rollups()
    yield store
    store.close()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start_s=st.integers(-3600, 5 * 86400), length_s=st.integers(60, 3 * 86400),
       every=st.sampled_from(["1m", "7m", "1h", "3h", "1d", "1mo"]),
       agg=st.sampled_from(["mean", "min", "max", "sum", "count", "first", "last"]),
       devices=st.sampled_from([None, ("kol",), ("lon", "adl")]))
def test_rollup_queries_equal_raw(query_store: DuckDBStore, start_s: int, length_s: int,
                                  every: str, agg: str, devices: tuple[str, ...] | None) -> None:
    start = START + timedelta(seconds=start_s)
    calendars = {"1d": (timedelta(days=1), "day"), "1mo": (timedelta(days=30), "month")}
    width, calendar = calendars[every] if every in calendars else (parse_duration(every), None)
    query = ReadingQuery("t", ("pm2_5",), start, start + timedelta(seconds=length_s),
                         device_ids=devices, every=width, agg=agg,  # type: ignore[arg-type]
                         calendar=calendar)  # type: ignore[arg-type]
    grain = choose_grain(width, calendar, 0, query.start, query.end)
    raw = query_store.readings(query)
    rolled = query_store.readings(replace(query, rollup=grain))
    assert rolled.select(["device_id", "metric", "ts", "count"]).equals(
        raw.select(["device_id", "metric", "ts", "count"]))
    for got, want in zip(rolled.column("value").to_pylist(), raw.column("value").to_pylist(),
                         strict=True):
        assert got == pytest.approx(want, rel=1e-9, abs=1e-9)
