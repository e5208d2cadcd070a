"""Rollups equal the raw aggregate at every grain, whatever the order, lateness and
repetition of the batches; replaying changes nothing and never sets `revised`."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rollup_support import Clock, assert_equal_to_raw, make_store, table

from sensorlake.registry import Device

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
