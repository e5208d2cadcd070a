"""Filtering on quality flags: the store filters on every backend (lake part included), and
the readings API's flags=, exclude_flags= (names or integers) and include=quality."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from api.world import World
from sensorlake.api.ranges import parse_flags
from sensorlake.errors import InputError
from sensorlake.log.base import Span
from sensorlake.model import READING_SCHEMA, Quality, flag_names
from sensorlake.store.base import HotStore, ReadingQuery
from sensorlake.store.duckdb import DuckDBStore
from sensorlake.store.lake import ParquetLake
from sensorlake.store.memory import MemoryStore
from sensorlake.store.postgres import PostgresStore
from server_support import pg_schema

T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
"""On a whole hour: the rows span 8 minutes, so an hourly bucket holds them all whatever the
clock says when the test runs."""
SPIKE, STUCK, CAL = Quality.SPIKE, Quality.STUCK, Quality.CALIBRATED
# value i has quality QUALITIES[i]
QUALITIES = [0, SPIKE, STUCK, SPIKE | STUCK, CAL, CAL | SPIKE, Quality.GAP, 0]


def rows(device: str = "a-aq-1", tenant: str = "a", start: datetime = T0) -> pa.Table:
    return pa.Table.from_pylist([
        {"tenant": tenant, "device_id": device, "metric": "pm2_5",
         "ts": start + timedelta(minutes=i), "value": float(i), "quality": q,
         "received_at": start + timedelta(minutes=i), "lat": None, "lon": None}
        for i, q in enumerate(QUALITIES)], schema=READING_SCHEMA)


def values_with(mask_any: int = 0, mask_none: int = 0) -> list[float]:
    return [float(i) for i, q in enumerate(QUALITIES)
            if (not mask_any or q & mask_any) and not q & mask_none]


def test_parse_flags_names_integers_and_errors() -> None:
    assert parse_flags("spike,stuck", "flags") == SPIKE | STUCK
    assert parse_flags("6", "flags") == 6
    assert parse_flags(" Spike , 16 ,", "flags") == SPIKE | Quality.CLOCK_SUSPECT
    assert parse_flags("0", "exclude_flags") == 0
    with pytest.raises(InputError, match="'spikes' is not a quality flag: use out_of_range"):
        parse_flags("spikes", "flags")
    with pytest.raises(InputError, match="exclude_flags: '99999'"):
        parse_flags("99999", "exclude_flags")
    assert flag_names(SPIKE | CAL | Quality.OUT_OF_RANGE) == ["out_of_range", "spike",
                                                              "calibrated"]


@pytest.fixture(params=["memory", "duckdb", "postgres", "duckdb-lake", "postgres-lake"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HotStore]:
    """A store holding `rows()`; the -lake variants answer half the range from the lake."""
    kind = request.param
    with contextlib.ExitStack() as stack:
        lake = ParquetLake(tmp_path / "lake")
        s: HotStore
        if kind == "memory":
            s = MemoryStore()
        elif kind.startswith("postgres"):
            s = PostgresStore(stack.enter_context(pg_schema()), lake)
        else:
            s = DuckDBStore(tmp_path / "hot.duckdb", lake)
        table = rows()
        if kind.endswith("lake"):  # first half in the lake only, before the hot horizon
            lake.write_span("readings", Span(1, 1), table.slice(0, 4))
            s.write(table.slice(4))
            s.horizon = lambda: T0 + timedelta(minutes=4)  # type: ignore[method-assign]
        else:
            s.write(table)
        yield s
        s.close()


def query(**kw: object) -> ReadingQuery:
    return ReadingQuery(tenant="a", metrics=("pm2_5",), start=T0,
                        end=T0 + timedelta(hours=1), **kw)  # type: ignore[arg-type]


def test_store_filters_on_flags(store: HotStore) -> None:
    got = store.readings(query(require_quality=SPIKE | STUCK))
    assert got.column("value").to_pylist() == values_with(SPIKE | STUCK)
    assert "quality" not in got.column_names
    got = store.readings(query(require_quality=SPIKE, exclude_quality=CAL))
    assert got.column("value").to_pylist() == [1.0, 3.0]
    bucketed = store.readings(query(require_quality=SPIKE, every=timedelta(hours=1),
                                    agg="count"))
    assert bucketed.column("value").to_pylist() == [3.0]


def test_store_returns_quality_with_raw_readings(store: HotStore) -> None:
    got = store.readings(query(with_quality=True))
    assert got.column("value").to_pylist() == values_with()
    assert got.column("quality").to_pylist() == QUALITIES
    assert got.schema.field("quality").type == pa.int16()
    only = store.readings(query(with_quality=True, exclude_quality=SPIKE))
    assert only.column("quality").to_pylist() == [q for q in QUALITIES if not q & SPIKE]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    built = World(tmp_path / "data")
    built.runtime.hot.write(rows())
    built.runtime.hot.write(rows("a-aq-2"))
    yield built
    built.close()


def get(world: World, url: str, **params: object):
    window = {"from": T0.isoformat(), "to": (T0 + timedelta(hours=1)).isoformat()}
    return world.client.get(url, params={"metric": "pm2_5", **window, **params},
                            headers=world.headers("a", "owner"))


def test_api_flags_by_name_or_integer(world: World) -> None:
    url = "/api/v1/devices/a-aq-1/readings"
    by_name = get(world, url, flags="spike,stuck").json()["results"]
    assert [r["value"] for r in by_name] == values_with(SPIKE | STUCK)
    by_int = get(world, url, flags=str(SPIKE | STUCK)).json()["results"]
    assert by_int == by_name
    excluded = get(world, url, exclude_flags="spike,calibrated").json()["results"]
    assert [r["value"] for r in excluded] == values_with(mask_none=SPIKE | CAL)
    assert [r["value"] for r in get(world, url, exclude_flags="36").json()["results"]] == \
        values_with(mask_none=SPIKE | CAL)
    good = get(world, url, quality="good", flags="calibrated").json()["results"]
    assert [r["value"] for r in good] == [4.0]


def test_api_include_quality_gives_bits_and_names(world: World) -> None:
    body = get(world, "/api/v1/devices/a-aq-1/readings", include="quality").json()
    assert [r["quality"] for r in body["results"]] == QUALITIES
    assert body["results"][3]["flags"] == ["stuck", "spike"]
    assert body["results"][5]["flags"] == ["spike", "calibrated"]
    assert body["results"][0]["flags"] == []
    plain = get(world, "/api/v1/devices/a-aq-1/readings").json()["results"][0]
    assert set(plain) == {"ts", "value"}
    several = get(world, "/api/v1/readings", include="quality", flags="gap").json()
    assert [(r["device_id"], r["value"], r["quality"], r["flags"])
            for r in several["results"]] == [("a-aq-1", 6.0, 8, ["gap"]),
                                             ("a-aq-2", 6.0, 8, ["gap"])]


def test_api_export_can_carry_quality(world: World) -> None:
    response = get(world, "/api/v1/export", include="quality", format="csv", flags="spike",
                   device="a-aq-1")
    assert response.status_code == 200, response.text
    lines = response.text.strip().splitlines()
    assert lines[0].replace('"', "") == "device_id,metric,ts,value,count,quality"
    assert [line.split(",")[-1] for line in lines[1:]] == [
        str(q) for q in QUALITIES if q & SPIKE]


@pytest.mark.parametrize("params, message", [
    ({"flags": "sparkle"}, "flags: 'sparkle' is not a quality flag"),
    ({"exclude_flags": "-1"}, "exclude_flags: '-1' is not a quality flag"),
    ({"include": "colour"}, "include: unknown column 'colour'"),
    ({"include": "quality", "every": "1h"}, "include=quality gives the flags of raw"),
])
def test_api_bad_flag_parameters_are_422(world: World, params: dict, message: str) -> None:
    response = get(world, "/api/v1/devices/a-aq-1/readings", **params)
    assert response.status_code == 422
    assert message in response.text
