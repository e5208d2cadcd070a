"""Range-query features the API relies on, the same on every hot store: the quality filter
and keyset paging (raw and bucketed) give the same rows on the in-memory and DuckDB stores."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from sensorlake.model import READING_SCHEMA, Quality
from sensorlake.store.base import HotStore, ReadingQuery
from sensorlake.store.duckdb import DuckDBStore
from sensorlake.store.memory import MemoryStore

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["memory", "duckdb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HotStore]:
    s: HotStore = MemoryStore() if request.param == "memory" else DuckDBStore(
        tmp_path / "hot.duckdb")
    rows = [{"tenant": "A", "device_id": d, "metric": m, "ts": T0 + timedelta(seconds=10 * i),
             "value": float(i), "quality": Quality.SPIKE if i % 4 == 0 else 0,
             "received_at": T0, "lat": None, "lon": None}
            for d in ("d1", "d2") for m in ("pm10", "pm2_5") for i in range(12)]
    s.write(pa.Table.from_pylist(rows, schema=READING_SCHEMA))
    yield s
    s.close()


def base(**kw: object) -> ReadingQuery:
    kw.setdefault("metrics", ("pm10", "pm2_5"))
    return ReadingQuery(tenant="A", start=T0, end=T0 + timedelta(minutes=5),
                        **kw)  # type: ignore[arg-type]


def keys(table: pa.Table) -> list[tuple[str, str, datetime]]:
    return [(r["device_id"], r["metric"], r["ts"]) for r in table.to_pylist()]


def test_quality_filter(store: HotStore) -> None:
    values = store.readings(base(device_ids=("d1",), metrics=("pm10",),
                                 exclude_quality=Quality.SPIKE)).column("value").to_pylist()
    assert values == [float(i) for i in range(12) if i % 4]


@pytest.mark.parametrize("every", [None, timedelta(seconds=30)])
def test_pages_cover_everything_once(store: HotStore, every: timedelta | None) -> None:
    whole = keys(store.readings(base(every=every)))
    assert whole
    pages: list[tuple[str, str, datetime]] = []
    query = base(every=every, limit=5)
    while True:
        page = keys(store.readings(query))
        pages.extend(page)
        if len(page) < 5:
            break
        query = replace(query, after=page[-1])
    assert pages == whole


def test_a_long_device_list_reads_like_a_short_one(store: HotStore) -> None:
    """Over IN_LIST_MAX ids the SQL stores bind one array parameter instead of one each."""
    many = ("d1", *(f"x{i}" for i in range(30)), "d2")
    assert keys(store.readings(base(device_ids=many))) == keys(
        store.readings(base(device_ids=("d1", "d2"))))
    assert store.latest("A", None, many).num_rows == store.latest("A", None, None).num_rows == 4
