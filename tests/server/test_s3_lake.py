"""The lake on S3, against `moto_server` run as a subprocess: same layout and names as the
local lake, create-if-absent puts, partition pruning, reads for old-range queries."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from sensorlake.log.base import Span
from sensorlake.model import READING_SCHEMA
from sensorlake.store.base import Lake
from sensorlake.store.lake import ParquetLake
from sensorlake.store.s3lake import S3Lake
from server_support import MotoServer, s3_settings

T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
S = timedelta(seconds=1)


def rows(*items: tuple[str, datetime, float]) -> pa.Table:
    n = len(items)
    return pa.Table.from_pydict({
        "tenant": ["A"] * n, "device_id": [i[0] for i in items], "metric": ["temp"] * n,
        "ts": [i[1] for i in items], "value": [i[2] for i in items], "quality": [0] * n,
        "received_at": [i[1] for i in items], "lat": [None] * n, "lon": [None] * n,
    }, schema=READING_SCHEMA)


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto")).start()
    yield server
    server.stop()


@pytest.fixture
def lake(moto: MotoServer) -> S3Lake:
    settings = s3_settings(moto.url)
    lake = S3Lake(settings)
    lake.client.create_bucket(Bucket=settings.bucket)
    return lake


def test_same_layout_as_the_local_lake(lake: S3Lake, tmp_path: Path) -> None:
    assert isinstance(lake, Lake)
    batch = rows(("d1", T0 - S, 1.0), ("d1", T0, 2.0), ("d2", T0 - 2 * S, 3.0))
    urls = lake.write_span("readings", Span(5, 7), batch)
    local = ParquetLake(tmp_path / "lake").write_span("readings", Span(5, 7), batch)
    relative = [str(Path(p).relative_to(tmp_path / "lake")) for p in local]
    assert urls == [f"s3://{lake.bucket}/lake/{r}" for r in relative]
    assert lake.files("readings", T0, T0 + timedelta(hours=1)) == [urls[1]]
    assert lake.files("readings", T0 - timedelta(hours=1), T0) == [urls[0]]
    assert lake.files("readings") == sorted(urls) and lake.files("raw") == []
    table = lake.read_files(urls)
    assert sorted(table.column("value").to_pylist()) == [1.0, 2.0, 3.0]
    assert table.schema == READING_SCHEMA


def test_puts_are_create_if_absent(lake: S3Lake) -> None:
    batch = rows(("d1", T0, 1.0))
    [url] = lake.write_span("readings", Span(1, 1), batch)
    key = url.removeprefix(f"s3://{lake.bucket}/")
    tag = lake.client.head_object(Bucket=lake.bucket, Key=key)["ETag"]
    changed = batch.set_column(4, "value", pc.add(batch.column("value"), 1.0))
    assert lake.write_span("readings", Span(1, 1), changed) == [url]  # exists: untouched
    lake._put_if_absent(key, b"not parquet")  # even past the HEAD check, If-None-Match holds
    assert lake.client.head_object(Bucket=lake.bucket, Key=key)["ETag"] == tag
    assert lake.read_files([url]).column("value").to_pylist() == [1.0]
    with ThreadPoolExecutor(4) as pool:  # racing writers of one span: one object
        list(pool.map(lambda _: lake.write_span("readings", Span(2, 2), batch), range(4)))
    assert len(lake.files("readings")) == 2


def test_unreachable_store_is_transient(moto: MotoServer) -> None:
    from sensorlake.errors import SinkUnavailable
    settings = s3_settings("http://127.0.0.1:9")  # nothing listens there
    lake = S3Lake(settings)
    with pytest.raises(SinkUnavailable, match=r"check s3\.endpoint_url"):
        lake.write_span("readings", Span(1, 1), rows(("d1", T0, 1.0)))
