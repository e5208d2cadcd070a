"""Contract of the sinks: every HotStore, Quarantine and the Parquet lake keep these promises."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensorlake.log.base import LOG_ENTRY_SCHEMA, Span
from sensorlake.model import READING_SCHEMA
from sensorlake.store.base import (
    LATEST_SCHEMA,
    QUARANTINE_SCHEMA,
    SERIES_SCHEMA,
    HotStore,
    Lake,
    Quarantine,
    ReadingQuery,
)
from sensorlake.store.duckdb import DuckDBStore
from sensorlake.store.lake import ParquetLake
from sensorlake.store.memory import MemoryQuarantine, MemoryStore
from sensorlake.store.pg_quarantine import PostgresQuarantine
from sensorlake.store.postgres import PostgresStore
from sensorlake.store.quarantine import SQLiteQuarantine
from server_support import pg_schema

NOW = datetime.now(UTC)
T0 = NOW.replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
"""An hour boundary recent enough to be inside the hot horizon."""
S = timedelta(seconds=1)


def rows(*items: tuple[str, str, str, datetime, float], lat: float | None = None) -> pa.Table:
    """READING_SCHEMA rows from (tenant, device, metric, ts, value)."""
    cols = list(zip(*items, strict=True)) if items else [[]] * 5
    n = len(items)
    return pa.Table.from_pydict({
        "tenant": list(cols[0]), "device_id": list(cols[1]), "metric": list(cols[2]),
        "ts": list(cols[3]), "value": list(cols[4]), "quality": [0] * n,
        "received_at": [t + 20 * timedelta(milliseconds=1) for t in cols[3]],
        "lat": [lat] * n, "lon": [None] * n,
    }, schema=READING_SCHEMA)


# d1/temp: bucket [T0, T0+60s) holds 1, 3, 2 (ts 0, 10, 20); bucket [T0+60s, +120s) holds
# 4, 5 (ts 65, 70). Written out of order so first/last must use ts, not arrival.
SAMPLE = rows(
    ("A", "d1", "temp", T0 + 20 * S, 2.0), ("A", "d1", "temp", T0, 1.0),
    ("A", "d1", "temp", T0 + 70 * S, 5.0), ("A", "d1", "temp", T0 + 10 * S, 3.0),
    ("A", "d1", "temp", T0 + 65 * S, 4.0), ("A", "d1", "hum", T0 + 5 * S, 50.0),
    ("A", "d2", "temp", T0 + 30 * S, 7.0), ("B", "d1", "temp", T0 + 1 * S, 100.0),
)


@pytest.fixture(params=["memory", "duckdb", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HotStore]:
    s: HotStore
    with contextlib.ExitStack() as stack:
        if request.param == "memory":
            s = MemoryStore()
        elif request.param == "postgres":
            s = PostgresStore(stack.enter_context(pg_schema()), ParquetLake(tmp_path / "lake"))
        else:
            s = DuckDBStore(tmp_path / "hot.duckdb", ParquetLake(tmp_path / "lake"))
        assert isinstance(s, HotStore)
        yield s
        s.close()


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def quarantine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Quarantine]:
    with contextlib.ExitStack() as stack:
        q: Quarantine
        if request.param == "memory":
            q = MemoryQuarantine()
        elif request.param == "postgres":
            q = PostgresQuarantine(stack.enter_context(pg_schema()))
        else:
            q = SQLiteQuarantine(tmp_path / "quarantine.sqlite")
        assert isinstance(q, Quarantine)
        yield q
        q.close()


def query(tenant: str = "A", metrics: tuple[str, ...] = ("temp",), **kw: object) -> ReadingQuery:
    kw.setdefault("start", T0)
    kw.setdefault("end", T0 + timedelta(minutes=5))
    return ReadingQuery(tenant=tenant, metrics=metrics, **kw)  # type: ignore[arg-type]


def series(table: pa.Table) -> list[tuple[str, str, float, float, int]]:
    """(device, metric, seconds after T0, value, count) per row."""
    assert table.schema == SERIES_SCHEMA
    return [(r["device_id"], r["metric"], (r["ts"] - T0).total_seconds(), r["value"], r["count"])
            for r in table.to_pylist()]


# -- hot store ---------------------------------------------------------------------------------

def test_write_twice_stores_once(store: HotStore) -> None:
    assert store.write(SAMPLE) == SAMPLE.num_rows
    assert store.write(SAMPLE) == 0
    assert store.count() == SAMPLE.num_rows
    assert store.count("A") == 7 and store.count("B") == 1


def test_duplicates_inside_one_batch_keep_the_first(store: HotStore) -> None:
    batch = rows(("A", "d1", "temp", T0, 1.0), ("A", "d1", "temp", T0, 9.0),
                 ("A", "d1", "temp", T0 + S, 2.0))
    assert store.write(batch) == 2
    assert [v for *_, v, _ in series(store.readings(query()))] == [1.0, 2.0]


def test_scattered_batch_and_extra_columns(store: HotStore) -> None:
    """Readings hours apart (more clusters than the DuckDB anti-join probes separately)."""
    batch = rows(*[("A", "d1", "temp", T0 - i * timedelta(hours=2), float(i)) for i in range(12)])
    assert store.write(batch.append_column("msg_id", pa.array(["m1"] * 12))) == 12
    assert store.write(batch) == 0 and store.count() == 12


def test_late_rows_are_stored_and_late_duplicates_are_not(store: HotStore) -> None:
    """A batch mixing rows older than the key's newest (one new, one a re-send with another
    value) and newer ones: the late new row is stored, the re-send is not, latest moves on."""
    store.write(rows(("A", "d1", "temp", T0 + 10 * S, 1.0), ("A", "d1", "temp", T0 + 20 * S, 2.0)))
    mixed = rows(("A", "d1", "temp", T0 + 5 * S, 0.5), ("A", "d1", "temp", T0 + 20 * S, 9.0),
                 ("A", "d1", "temp", T0 + 30 * S, 3.0), ("A", "d2", "temp", T0, 7.0))
    assert store.write(mixed) == 3
    assert [(s, v) for _, _, s, v, _ in series(store.readings(query(device_ids=("d1",))))] == [
        (5.0, 0.5), (10.0, 1.0), (20.0, 2.0), (30.0, 3.0)]
    latest = {(r["device_id"], r["metric"]): (r["ts"], r["value"])
              for r in store.latest("A").to_pylist()}
    assert latest == {("d1", "temp"): (T0 + 30 * S, 3.0), ("d2", "temp"): (T0, 7.0)}
    assert store.write(mixed) == 0


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(st.tuples(st.sampled_from(["d1", "d2"]),
                                           st.sampled_from(["temp", "hum"]),
                                           st.integers(0, 30), st.integers(0, 5)),
                                 max_size=12), min_size=1, max_size=5))
def test_any_sequence_of_batches_keeps_the_first_copy_of_each_reading(
        store: HotStore, batches: list[list[tuple[str, str, int, int]]]) -> None:
    """Property: whatever the order and overlap of batches, the store holds each key once with
    the value first written, and latest is the newest stored reading of each key."""
    tenant = f"p{uuid.uuid4().hex}"  # the store is shared by the examples
    expected: dict[tuple[str, str, int], float] = {}
    for batch in batches:
        table = rows(*[(tenant, d, m, T0 + s * S, float(v)) for d, m, s, v in batch])
        new = 0
        for d, m, s, v in batch:
            if (d, m, s) not in expected:
                expected[(d, m, s)] = float(v)
                new += 1
        assert store.write(table) == new
    got = {(d, m, int(s)): v for d, m, s, v, _ in series(
        store.readings(query(tenant=tenant, metrics=("temp", "hum"))))}
    assert got == expected
    newest: dict[tuple[str, str], tuple[int, float]] = {}
    for (d, m, s), v in expected.items():
        if (d, m) not in newest or s > newest[(d, m)][0]:
            newest[(d, m)] = (s, v)
    latest = {(r["device_id"], r["metric"]): (int((r["ts"] - T0).total_seconds()), r["value"])
              for r in store.latest(tenant).to_pylist()}
    assert latest == newest


def test_raw_readings_half_open_and_ordered(store: HotStore) -> None:
    store.write(SAMPLE)
    got = series(store.readings(query(metrics=("temp", "hum"), end=T0 + 70 * S)))
    assert got == [
        ("d1", "hum", 5.0, 50.0, 1), ("d1", "temp", 0.0, 1.0, 1), ("d1", "temp", 10.0, 3.0, 1),
        ("d1", "temp", 20.0, 2.0, 1), ("d1", "temp", 65.0, 4.0, 1), ("d2", "temp", 30.0, 7.0, 1),
    ]
    assert series(store.readings(query(metrics=(), end=T0 + 70 * S))) == got  # () = every metric


@pytest.mark.parametrize(("agg", "first_bucket", "second_bucket"), [
    ("mean", 2.0, 4.5), ("min", 1.0, 4.0), ("max", 3.0, 5.0), ("sum", 6.0, 9.0),
    ("count", 3.0, 2.0), ("first", 1.0, 4.0), ("last", 2.0, 5.0),
])
def test_bucketed_aggregates(store: HotStore, agg: str, first_bucket: float,
                             second_bucket: float) -> None:
    store.write(SAMPLE)
    got = series(store.readings(query(device_ids=("d1",), every=timedelta(minutes=1), agg=agg)))
    assert got == [("d1", "temp", 0.0, first_bucket, 3), ("d1", "temp", 60.0, second_bucket, 2)]


def test_buckets_are_aligned_to_the_epoch(store: HotStore) -> None:
    store.write(SAMPLE)
    table = store.readings(query(every=timedelta(minutes=7), agg="count"))
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for r in table.to_pylist():
        assert (r["ts"] - epoch).total_seconds() % 420 == 0
    assert sum(table.column("count").to_pylist()) == 6


def test_tenant_isolation(store: HotStore) -> None:
    store.write(SAMPLE)
    got = series(store.readings(query("B", metrics=("temp", "hum"))))
    assert got == [("d1", "temp", 1.0, 100.0, 1)]
    assert all(r["value"] != 100.0 for r in store.readings(query("A")).to_pylist())
    assert store.latest("B").column("value").to_pylist() == [100.0]
    assert store.readings(query("C")).num_rows == 0


def test_device_filter_and_limit(store: HotStore) -> None:
    store.write(SAMPLE)
    assert {r[0] for r in series(store.readings(query(device_ids=("d2",))))} == {"d2"}
    assert store.readings(query(device_ids=())).num_rows == 0
    assert store.readings(query(device_ids=("nope",))).num_rows == 0
    limited = series(store.readings(query(limit=2)))
    assert [(d, t) for d, _, t, _, _ in limited] == [("d1", 0.0), ("d1", 10.0)]


def test_latest(store: HotStore) -> None:
    store.write(rows(("A", "d1", "temp", T0 + 70 * S, 5.0), lat=51.5))
    store.write(SAMPLE)  # holds older readings: they must not replace the newest
    latest = store.latest("A")
    assert latest.schema == LATEST_SCHEMA
    got = [(r["device_id"], r["metric"], (r["ts"] - T0).total_seconds(), r["value"], r["lat"])
           for r in latest.to_pylist()]
    assert got == [("d1", "hum", 5.0, 50.0, None), ("d1", "temp", 70.0, 5.0, 51.5),
                   ("d2", "temp", 30.0, 7.0, None)]
    assert store.latest("A", metrics=("hum",)).num_rows == 1
    assert store.latest("A", device_ids=("d2",)).column("device_id").to_pylist() == ["d2"]
    store.write(rows(("A", "d2", "temp", T0 + 90 * S, 8.0)))
    assert store.latest("A", device_ids=("d2",)).column("value").to_pylist() == [8.0]


def test_apply_retention(store: HotStore) -> None:
    old = rows(("A", "d1", "temp", NOW - timedelta(days=40), 1.0))
    store.write(pa.concat_tables([old, SAMPLE]))
    assert store.apply_retention() == 1
    assert store.count() == SAMPLE.num_rows
    assert store.apply_retention() == 0


# -- DuckDB: the lake answers ranges older than the hot horizon --------------------------------

def test_duckdb_reads_old_ranges_from_the_lake(tmp_path: Path) -> None:
    lake = ParquetLake(tmp_path / "lake")
    store = DuckDBStore(tmp_path / "hot.duckdb", lake, retention_days=30)
    old_t = (NOW - timedelta(days=40)).replace(microsecond=0)
    old = rows(*[("A", "d1", "temp", old_t + i * S, float(i)) for i in range(3)],
               ("B", "d1", "temp", old_t, 99.0))
    recent = rows(("A", "d1", "temp", T0, 10.0), ("A", "d1", "temp", T0 + S, 11.0))
    both = pa.concat_tables([old, recent])
    lake.write_span("readings", Span(1, 6), both)  # the worker writes the lake and the store
    assert store.write(both) == 6
    q = query(start=NOW - timedelta(days=45), end=NOW)
    before = store.readings(q).column("value").to_pylist()
    assert before == [0.0, 1.0, 2.0, 10.0, 11.0]  # no duplicates before retention either
    assert store.apply_retention() == 4
    assert store.count() == 2
    assert store.readings(q).column("value").to_pylist() == [0.0, 1.0, 2.0, 10.0, 11.0]
    day = store.readings(query(start=NOW - timedelta(days=45), end=NOW,
                               every=timedelta(days=1), agg="sum"))
    assert sum(day.column("count").to_pylist()) == 5
    assert sum(day.column("value").to_pylist()) == 24.0
    only_old = store.readings(query(start=NOW - timedelta(days=45), end=NOW - timedelta(days=35)))
    assert only_old.column("value").to_pylist() == [0.0, 1.0, 2.0]
    assert store.readings(query("B", start=NOW - timedelta(days=45), end=NOW)
                          ).column("value").to_pylist() == [99.0]
    store.close()


def test_duckdb_concurrent_reads_and_reopen(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "hot.duckdb", None)
    with ThreadPoolExecutor(2) as pool:
        reads = [pool.submit(store.readings, query()) for _ in range(40)]
        for i in range(20):
            store.write(rows(*[("A", "d1", "temp", T0 + (i * 10 + j) * S, 1.0) for j in range(10)]))
        assert all(f.result().num_rows <= 200 for f in reads)
    store.close()
    again = DuckDBStore(tmp_path / "hot.duckdb", None)
    assert again.count() == 200
    assert again.latest("A").column("ts").to_pylist() == [T0 + 199 * S]
    again.close()


# -- lake --------------------------------------------------------------------------------------

def read_all(lake: ParquetLake, dataset: str = "readings") -> pa.Table:
    files = f"{lake.root}/{dataset}/**/*.parquet"
    return duckdb.sql(f"select * from read_parquet('{files}', hive_partitioning=true)"
                      ).to_arrow_table()


def test_lake_write_span_is_idempotent(tmp_path: Path) -> None:
    lake = ParquetLake(tmp_path / "lake")
    assert isinstance(lake, Lake)
    first = lake.write_span("readings", Span(1, 8), SAMPLE)
    content = {p: Path(p).read_bytes() for p in first}
    stamps = {p: os.stat(p).st_mtime_ns for p in first}
    assert lake.write_span("readings", Span(1, 8), SAMPLE) == first
    assert {p: Path(p).read_bytes() for p in first} == content
    assert {p: os.stat(p).st_mtime_ns for p in first} == stamps
    assert len(first) == 1 and first[0].endswith("part-000000000001-000000000008.parquet")
    stored = pq.read_table(first[0])
    assert stored.schema == READING_SCHEMA  # no date/hour inside the file
    keys = [(r["tenant"], r["device_id"], r["metric"], r["ts"]) for r in stored.to_pylist()]
    assert keys == sorted(keys)
    assert lake.write_span("readings", Span(9, 9), SAMPLE.slice(0, 0)) == []


def test_lake_partition_across_an_hour_boundary(tmp_path: Path) -> None:
    lake = ParquetLake(tmp_path / "lake")
    batch = rows(("A", "d1", "temp", T0 - S, 1.0), ("A", "d1", "temp", T0, 2.0),
                 ("A", "d2", "temp", T0 - 2 * S, 3.0))
    paths = lake.write_span("readings", Span(5, 7), batch)
    before = T0 - S
    assert [Path(p).parent.relative_to(lake.root).as_posix() for p in paths] == [
        f"readings/date={before:%Y-%m-%d}/hour={before:%H}",
        f"readings/date={T0:%Y-%m-%d}/hour={T0:%H}",
    ]
    assert [pq.read_metadata(p).num_rows for p in paths] == [2, 1]
    table = read_all(lake)
    assert {"date", "hour"} <= set(table.column_names)
    got = sorted((str(r["date"]), int(r["hour"]), r["value"]) for r in table.to_pylist())
    assert got == sorted([(f"{before:%Y-%m-%d}", before.hour, 1.0),
                          (f"{before:%Y-%m-%d}", before.hour, 3.0),
                          (f"{T0:%Y-%m-%d}", T0.hour, 2.0)])
    assert lake.files("readings", T0, T0 + timedelta(hours=1)) == [paths[1]]
    assert lake.files("readings", T0 - timedelta(hours=1), T0) == [paths[0]]
    assert lake.files("readings", T0 + timedelta(hours=1), T0 + timedelta(hours=2)) == []
    assert lake.files("raw") == []


def test_lake_ignores_and_cleans_temp_files(tmp_path: Path) -> None:
    lake = ParquetLake(tmp_path / "lake")
    [path] = lake.write_span("readings", Span(1, 8), SAMPLE)
    junk = Path(path).parent / ".tmp-part-000000000009-000000000010-deadbeef"
    junk.write_bytes(b"half a parquet file")
    glob = lake.glob("readings")
    count = duckdb.sql(f"select count(*) from read_parquet('{glob}', hive_partitioning=true)")
    assert count.fetchall() == [(SAMPLE.num_rows,)]
    assert lake.files("readings") == [path]
    assert lake.clean_temp(max_age=0) == 1 and not junk.exists()


def test_lake_raw_dataset(tmp_path: Path) -> None:
    lake = ParquetLake(tmp_path / "lake")
    n = 5
    received = [T0 - S, T0 + S, T0 - 2 * S, T0 + 2 * S, T0 + 3 * S]
    table = pa.Table.from_pydict({
        "offset": [14, 11, 12, 13, 10], "msg_id": [f"m{i}" for i in range(n)],
        "tenant": ["A"] * n, "device_id": ["d1"] * n, "source": ["http"] * n,
        "codec": ["envelope"] * n, "received_at": received, "seq": [1, None, 3, 4, 5],
        "payload": [b"{}"] * n,
    }, schema=LOG_ENTRY_SCHEMA)
    paths = lake.write_span("raw", Span(10, 14), table)
    assert len(paths) == 2
    assert [pq.read_table(p).column("offset").to_pylist() for p in paths] == [[12, 14],
                                                                             [10, 11, 13]]
    assert pq.read_table(paths[0]).schema == LOG_ENTRY_SCHEMA
    assert read_all(lake, "raw").num_rows == n


def test_lake_readings_are_compact(tmp_path: Path) -> None:
    """20 devices x 6 metrics x 10 min at 1 Hz, values rounded to 0.1: at most 3 B/reading."""
    rng = np.random.default_rng(7)
    secs, series_n = 600, 120
    t0_us = int(T0.timestamp()) * 1_000_000
    ts = np.tile(t0_us + np.arange(secs) * 1_000_000, series_n)
    arrival = np.tile(rng.integers(5_000, 50_000, secs * 20), 6)  # one message: 6 metrics
    walk = np.round(20 + np.cumsum(rng.normal(0, 0.05, (series_n, secs)), axis=1), 1).ravel()
    us = pa.timestamp("us", tz="UTC")
    table = pa.table({
        "tenant": ["A"] * len(ts), "metric": [f"m{i // (20 * secs)}" for i in range(len(ts))],
        "device_id": [f"aq-{i // secs % 20:03d}" for i in range(len(ts))],
        "ts": pa.array(ts, us), "value": walk, "quality": pa.array(np.zeros(len(ts), np.int16)),
        "received_at": pa.array(ts + arrival, us), "lat": [51.5] * len(ts), "lon": [-0.1] * len(ts),
    }).select(READING_SCHEMA.names).cast(READING_SCHEMA)
    [path] = ParquetLake(tmp_path / "lake").write_span("readings", Span(1, 1), table)
    assert duckdb.sql(f"select count(distinct (device_id, metric, ts)) from '{path}'"
                      ).fetchall() == [(table.num_rows,)]
    assert os.path.getsize(path) / table.num_rows <= 3.0, os.path.getsize(path) / table.num_rows


# -- quarantine --------------------------------------------------------------------------------

def rejects(*items: tuple[str, str, str | None, str], tenant: str = "A") -> pa.Table:
    """QUARANTINE_SCHEMA rows from (msg_id, stage, field, reason)."""
    n = len(items)
    return pa.Table.from_pydict({
        "msg_id": [i[0] for i in items], "tenant": [tenant] * n, "device_id": ["d1"] * n,
        "stage": [i[1] for i in items], "field": [i[2] for i in items], "value": ["x"] * n,
        "reason": [i[3] for i in items], "source": ["http"] * n, "received_at": [T0] * n,
        "payload": [b"\x00raw" + i[0].encode() for i in items],
    }, schema=QUARANTINE_SCHEMA)


def test_quarantine_is_idempotent(quarantine: Quarantine) -> None:
    batch = rejects(("m1", "decode", None, "bad json"), ("m1", "validate", "temp", "too hot"),
                    ("m1", "decode", None, "bad json"))
    assert quarantine.write(batch) == 2
    assert quarantine.write(batch) == 0
    assert quarantine.count() == 2


def test_quarantine_lists_newest_first_per_tenant(quarantine: Quarantine) -> None:
    quarantine.write(rejects(("m1", "decode", None, "bad json")))
    quarantine.write(rejects(("m2", "validate", "temp", "too hot"),
                             ("m3", "validate", "temp", "too hot")))
    quarantine.write(rejects(("m9", "decode", None, "bad json"), tenant="B"))
    listed = quarantine.list("A")
    assert listed.column_names == [*QUARANTINE_SCHEMA.names, "quarantined_at"]
    assert listed.column("msg_id").to_pylist() == ["m3", "m2", "m1"]
    assert listed.column("field").to_pylist() == ["temp", "temp", None]
    assert listed.column("payload").to_pylist()[2] == b"\x00rawm1"
    assert listed.column("received_at").to_pylist() == [T0] * 3
    assert quarantine.list("A", limit=1).column("msg_id").to_pylist() == ["m3"]
    assert quarantine.list("B").column("msg_id").to_pylist() == ["m9"]
    assert quarantine.list().num_rows == 4
    assert quarantine.list("A", since=NOW + timedelta(days=1)).num_rows == 0
    assert quarantine.list("A", since=NOW - timedelta(days=1)).num_rows == 3
    assert (quarantine.count("A"), quarantine.count("B"), quarantine.count("C")) == (3, 1, 0)
    assert quarantine.reasons("A") == [("too hot", 2), ("bad json", 1)]  # type: ignore[attr-defined]
