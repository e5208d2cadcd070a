"""Lake compaction: merged files supersede the small ones, never both visible, idempotent,
crash-safe (a merged file beside its inputs hides them; the next run removes them)."""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa

from sensorlake.log.base import Span
from sensorlake.model import READING_SCHEMA
from sensorlake.ops.compact import compact
from sensorlake.store.lake import ParquetLake, file_name, live_files, parse_file

HOUR = datetime(2026, 11, 20, 14, tzinfo=UTC)


def span_rows(first: int, count: int = 3) -> pa.Table:
    ts = [HOUR + timedelta(seconds=first * 10 + i) for i in range(count)]
    return pa.Table.from_pydict({
        "tenant": ["t"] * count, "device_id": ["d"] * count, "metric": ["pm2_5"] * count,
        "ts": ts, "value": [float(first + i) for i in range(count)], "quality": [0] * count,
        "received_at": ts, "lat": [None] * count, "lon": [None] * count},
        schema=READING_SCHEMA)


def lake_with_spans(root: Path, spans: int) -> ParquetLake:
    lake = ParquetLake(root)
    for i in range(spans):
        lake.write_span("readings", Span(i * 10 + 1, i * 10 + 10), span_rows(i * 10 + 1))
    return lake


def visible(lake: ParquetLake) -> list[tuple]:
    files = lake.files("readings")
    rel = duckdb.sql("SELECT device_id, epoch_us(ts), value FROM read_parquet(?) ORDER BY ts",
                     params=[files])
    return rel.fetchall()


def test_live_files_rule() -> None:
    files = [parse_file(n) for n in (file_name(Span(1, 10)), file_name(Span(11, 20)),
                                     file_name(Span(1, 20)), file_name(Span(21, 30)),
                                     file_name(Span(21, 30), 2))]
    live = [f.path for f in live_files([f for f in files if f])]
    assert live == [file_name(Span(1, 20)), file_name(Span(21, 30), 2)]


def test_compaction_merges_and_queries_see_the_same_rows(tmp_path: Path) -> None:
    lake = lake_with_spans(tmp_path / "lake", 6)
    before = visible(lake)
    result = compact(lake, acked=60, min_age_seconds=0, now=time.time())
    assert (result.files_in, result.files_out) == (6, 1)
    assert [Path(f).name for f in lake.files("readings")] == [file_name(Span(1, 60))]
    assert visible(lake) == before
    again = compact(lake, acked=60, min_age_seconds=0)
    assert (again.files_in, again.files_out, again.removed_superseded) == (0, 0, 0)


def test_unacknowledged_spans_and_recent_hours_are_left_alone(tmp_path: Path) -> None:
    lake = lake_with_spans(tmp_path / "lake", 4)
    compact(lake, acked=20, min_age_seconds=0)
    names = sorted(Path(f).name for f in lake.files("readings"))
    assert names == [file_name(Span(1, 20)), file_name(Span(21, 30)), file_name(Span(31, 40))]
    recent = compact(lake, acked=40, min_age_seconds=10**10)
    assert recent.files_in == 0


def test_a_crash_after_the_link_hides_the_inputs_and_the_next_run_removes_them(
        tmp_path: Path) -> None:
    lake = lake_with_spans(tmp_path / "lake", 3)
    before = visible(lake)
    folder = Path(lake.files("readings")[0]).parent
    saved = tmp_path / "saved"
    shutil.copytree(folder, saved)
    compact(lake, acked=30, min_age_seconds=0)
    for f in saved.iterdir():  # the inputs are back, as if the deletes never happened
        shutil.copy(f, folder / f.name)
    assert len(list(folder.glob("*.parquet"))) == 4
    assert [Path(f).name for f in lake.files("readings")] == [file_name(Span(1, 30))]
    assert visible(lake) == before  # never both: no row twice
    result = compact(lake, acked=30, min_age_seconds=0)
    assert result.removed_superseded == 3
    assert len(list(folder.glob("*.parquet"))) == 1
