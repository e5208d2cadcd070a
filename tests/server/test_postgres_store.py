"""PostgreSQL specifics beyond the sink contract: the worker's one-transaction commit that
skips offsets already processed, the lake exporter's spans over interleaved offsets,
retention by dropping exported partitions, and old ranges answered from the lake."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from sensorlake.config import PostgresSettings, Settings
from sensorlake.log import MemoryLog
from sensorlake.log.base import Envelope
from sensorlake.model import READING_SCHEMA
from sensorlake.server.exporter import LakeExporter
from sensorlake.store.base import HOT_SCHEMA, QUARANTINE_SCHEMA, ReadingQuery
from sensorlake.store.lake import ParquetLake
from sensorlake.store.pg_quarantine import PostgresQuarantine
from sensorlake.store.postgres import PostgresStore
from server_support import pg_schema

NOW = datetime.now(UTC).replace(microsecond=0)
T0 = NOW - timedelta(hours=3)


def readings(offsets: list[int], start: int = 0, day: datetime = T0) -> pa.Table:
    """One reading per offset (key by its index from `start`)."""
    n = len(offsets)
    return pa.Table.from_pydict({
        "tenant": ["A"] * n, "device_id": ["d1"] * n, "metric": ["temperature"] * n,
        "ts": [day + timedelta(seconds=start + i) for i in range(n)],
        "value": [float(start + i) for i in range(n)], "quality": [0] * n,
        "received_at": [day] * n, "lat": [None] * n, "lon": [None] * n,
        "log_offset": offsets}, schema=HOT_SCHEMA)


@pytest.fixture
def pg() -> Iterator[PostgresSettings]:
    with pg_schema() as settings:
        yield settings


@pytest.fixture
def store(pg: PostgresSettings, tmp_path: Path) -> Iterator[PostgresStore]:
    s = PostgresStore(pg, ParquetLake(tmp_path / "lake"))
    yield s
    s.close()


def test_commit_batch_skips_processed_offsets(store: PostgresStore) -> None:
    stored, fresh = store.commit_batch(readings([5, 6, 7]), [5, 6, 7])
    assert (stored, fresh) == (3, {5, 6, 7})
    # a redelivery of 6 and 7 with different content stores nothing (already processed)
    stored, fresh = store.commit_batch(readings([6, 7, 8], start=100), [6, 7, 8])
    assert (stored, fresh) == (1, {8})
    assert store.span_readings(6, 7).column("value").to_pylist() == [1.0, 2.0]
    assert store.span_readings(8, 8).column("value").to_pylist() == [102.0]
    assert store.span_readings(1, 9).schema == READING_SCHEMA


def test_commit_batch_writes_rejects_of_fresh_offsets_only(pg: PostgresSettings,
                                                           store: PostgresStore) -> None:
    def rejects(offsets: list[int]) -> pa.Table:
        n = len(offsets)
        return pa.Table.from_pydict({
            "msg_id": [f"m{o}" for o in offsets], "tenant": ["A"] * n, "device_id": ["d1"] * n,
            "stage": ["decode"] * n, "field": [None] * n, "value": [None] * n,
            "reason": ["bad json"] * n, "source": ["http"] * n, "received_at": [T0] * n,
            "payload": [b"{"] * n}, schema=QUARANTINE_SCHEMA).append_column(
                "log_offset", pa.array(offsets, pa.int64()))
    store.commit_batch(HOT_SCHEMA.empty_table(), [1, 2], rejects([1, 2]))
    store.commit_batch(HOT_SCHEMA.empty_table(), [2, 3], rejects([2, 3]))
    quarantine = PostgresQuarantine(pg)
    assert sorted(quarantine.list().column("msg_id").to_pylist()) == ["m1", "m2", "m3"]
    quarantine.close()


def test_concurrent_workers_on_overlapping_keys(store: PostgresStore) -> None:
    """Workers inserting the same readings (different offsets) at once: each stored once."""
    batches = [readings(list(range(w * 1000, w * 1000 + 500))) for w in range(4)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda b: store.commit_batch(b, b.column("log_offset")
                                                             .to_pylist())[0], batches))
    assert sum(results) == 500 and store.count() == 500


def test_exporter_cuts_spans_at_the_first_unprocessed_offset(
        pg: PostgresSettings, store: PostgresStore, tmp_path: Path) -> None:
    log = MemoryLog()
    log.append([Envelope(str(i), "A", "d1", "http", "envelope", b"{}", 1, None)
                for i in range(1, 11)])
    settings = Settings(data_dir=tmp_path, postgres=pg)
    lake = ParquetLake(tmp_path / "lake")
    exporter = LakeExporter(settings, log, store, lake)
    store.commit_batch(readings([1, 2, 4]), [1, 2, 4])  # 3 is still with another worker
    span = exporter.step(force=True)
    assert span is not None and (span.first, span.last) == (1, 2)
    assert exporter.step(force=True) is None
    store.commit_batch(readings([3, 5], start=10), [3, 5])
    span = exporter.step(force=True)
    assert span is not None and (span.first, span.last) == (3, 5)
    assert exporter.exported() == 5 and log.position("lake") == 5
    other = LakeExporter(settings, log, store, lake)  # not the leader while we hold the lock
    assert other.step(force=True) is None and not other.stats.leader
    files = sorted(p.name for p in (tmp_path / "lake").rglob("*.parquet"))
    assert files == ["part-000000000001-000000000002.parquet"] * 2 + [
        "part-000000000003-000000000005.parquet"] * 2  # raw/ and readings/
    exporter._drop()
    other._drop()


def test_retention_drops_only_exported_partitions(store: PostgresStore) -> None:
    old = NOW - timedelta(days=40)
    store.write(readings([1, 2], day=old))
    store.write(readings([3], day=old - timedelta(days=1)))
    store.write(readings([9]))
    assert store.apply_retention(done_offset=2) == 2  # the day holding offset 3 waits
    assert store.apply_retention(done_offset=3) == 1
    assert store.count() == 1


def test_retention_waits_while_a_replay_rewrites(store: PostgresStore) -> None:
    """A replay window holds the hot-rewrite lock: retention (in any process) skips its
    run rather than drop rows the replay has re-inserted but not yet copied to the lake."""
    store.write(readings([1, 2], day=NOW - timedelta(days=40)))
    with store.rewrite_guard():
        assert store.apply_retention(done_offset=2) == 0
        assert store.count() == 2
    assert store.apply_retention(done_offset=2) == 2


def test_old_ranges_come_from_the_lake(pg: PostgresSettings, tmp_path: Path) -> None:
    lake = ParquetLake(tmp_path / "lake")
    store = PostgresStore(pg, lake, retention_days=30)
    old = NOW - timedelta(days=40)
    both = pa.concat_tables([readings([1, 2, 3], day=old), readings([4, 5], start=10)])
    from sensorlake.log.base import Span
    lake.write_span("readings", Span(1, 5), both.drop_columns(["log_offset"]))
    store.write(both)
    q = ReadingQuery("A", ("temperature",), NOW - timedelta(days=45), NOW)
    assert store.readings(q).column("value").to_pylist() == [0.0, 1.0, 2.0, 10.0, 11.0]
    assert store.apply_retention(done_offset=5) == 3
    assert store.readings(q).column("value").to_pylist() == [0.0, 1.0, 2.0, 10.0, 11.0]
    daily = store.readings(ReadingQuery("A", ("temperature",), NOW - timedelta(days=45), NOW,
                                        every=timedelta(days=1), agg="sum"))
    assert sum(daily.column("count").to_pylist()) == 5
    assert sum(daily.column("value").to_pylist()) == 24.0
    store.close()


def test_replace_span_and_window_stats(store: PostgresStore) -> None:
    store.write(readings([1, 2, 3]))
    replayed = readings([2, 3], start=1).set_column(
        4, "value", pa.array([10.0, 20.0]))  # offsets 2..3 now decode to other values
    assert store.replace_span(2, 3, replayed) == 2
    assert store.span_readings(1, 3).column("value").to_pylist() == [0.0, 10.0, 20.0]
    assert store.latest("A").column("value").to_pylist() == [20.0]
    assert store.replace_span(3, 3, readings([3], start=1).slice(0, 0)) == 0
    assert store.latest("A").column("value").to_pylist() == [10.0]  # the newest left
    stats = store.window_stats("A", T0, T0 + timedelta(minutes=1)).to_pylist()
    assert [(r["count"], r["first"], r["last"]) for r in stats] == [(2, 0.0, 10.0)]


def test_a_long_device_list_is_one_array_parameter(store: PostgresStore) -> None:
    store.commit_batch(readings([1, 2, 3]), [1, 2, 3])
    many = (*(f"x{i}" for i in range(30)), "d1")
    query = ReadingQuery(tenant="A", metrics=("temperature",), start=T0,
                         end=T0 + timedelta(minutes=1), device_ids=many)
    assert store.readings(query).column("value").to_pylist() == [0.0, 1.0, 2.0]
    assert store.latest("A", None, many).column("device_id").to_pylist() == ["d1"]


def test_processes_starting_at_once_create_the_schema_without_a_crash(
        pg: PostgresSettings) -> None:
    """Workers of a fresh deployment start together: CREATE SCHEMA IF NOT EXISTS races in
    PostgreSQL (a unique violation for the loser), which must not crash any of them."""
    import threading

    from sensorlake.store.pg_schema import connect
    fresh = pg.model_copy(update={"schema_name": pg.schema_name + "_race"})
    barrier, errors = threading.Barrier(8), []

    def start() -> None:
        barrier.wait()
        try:
            connect(fresh).close()
        except Exception as exc:  # the test reports whatever escaped
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    import psycopg
    with psycopg.connect(pg.dsn.get_secret_value(), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {fresh.schema_name} CASCADE")
    assert errors == []
