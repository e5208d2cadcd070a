"""The Parquet lake: Hive-partitioned files named by the log span, created only if absent.

Layout: `<root>/<dataset>/date=YYYY-MM-DD/hour=HH/part-<first:012d>-<last:012d>.parquet`
(UTC; `readings` partitioned by `ts`, `raw` by `received_at`). The partition columns live in
the path only. A file is written to `.tmp-*` in its folder, fsynced, hard-linked to its final
name (an existing file wins and is left alone) and the folder fsynced, so a crash leaves at
most temp files, which no glob matches and later writes to the folder remove.

Compaction and replay add files that *supersede* others (`live_files`): a
`part-<a>-<b>.parquet` covering the spans of smaller files in the same folder, or
`part-<a>-<b>-g<n>.parquet`, a newer generation of the same span. Readers going through
`files()` see only the live ones, so a merge or a rewrite becomes visible with one link.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sensorlake.log.base import LOG_ENTRY_SCHEMA, Span
from sensorlake.model import READING_SCHEMA

Dataset = Literal["raw", "readings"]
Compression = Literal["zstd", "snappy", "gzip", "none"]

HOUR_US = 3_600_000_000
TEMP_PREFIX = ".tmp-"
STALE_TEMP_SECONDS = 3600.0
ROW_GROUP_SIZE = 1 << 20

SCHEMAS: dict[str, pa.Schema] = {"readings": READING_SCHEMA, "raw": LOG_ENTRY_SCHEMA}
PARTITION_KEY: dict[str, str] = {"readings": "ts", "raw": "received_at"}
SORT_KEY: dict[str, tuple[str, ...]] = {
    "readings": ("tenant", "device_id", "metric", "ts"),
    "raw": ("offset",),
}


_PART = re.compile(r"^part-(\d+)-(\d+)(?:-g(\d+))?\.parquet$")


def file_name(span: Span, generation: int = 0) -> str:
    gen = f"-g{generation}" if generation else ""
    return f"part-{span.first:012d}-{span.last:012d}{gen}.parquet"


@dataclass(frozen=True)
class LakeFile:
    """A lake file and the log span (and generation) its name says it holds."""

    path: str
    first: int
    last: int
    generation: int = 0

    @property
    def size(self) -> int:
        return os.stat(self.path).st_size


def parse_file(path: str) -> LakeFile | None:
    match = _PART.match(os.path.basename(path))
    if match is None:
        return None
    return LakeFile(path, int(match.group(1)), int(match.group(2)), int(match.group(3) or 0))


def live_files(files: list[LakeFile]) -> list[LakeFile]:
    """The files of one partition that no other supersedes: B is superseded by A when A's
    span contains B's and is larger, or is the same span with a higher generation."""
    ordered = sorted(files, key=lambda f: (f.first, -f.last, -f.generation))
    out: list[LakeFile] = []
    reach = 0
    for f in ordered:
        if f.last > reach:
            out.append(f)
            reach = f.last
    return sorted(out, key=lambda f: f.path)


def partition_dir(root: Path, dataset: str, hour_index: int) -> Path:
    """The folder of the partition holding hour `hour_index` (hours since the Unix epoch)."""
    start = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(hours=hour_index)
    return root / dataset / f"date={start:%Y-%m-%d}" / f"hour={start:%H}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ensure_dir(path: Path, stop: Path) -> None:
    """mkdir -p that fsyncs the parent of every folder it creates (up to `stop`)."""
    if path.is_dir():
        return
    if path != stop and path.parent != path:
        _ensure_dir(path.parent, stop)
    try:
        path.mkdir()
    except FileExistsError:
        return
    _fsync_dir(path.parent)


def _link_or_leave(tmp: Path, final: Path) -> None:
    """Publish `tmp` as `final` unless `final` exists (then it is left as it is)."""
    try:
        os.link(tmp, final)
    except FileExistsError:
        pass
    except OSError as exc:  # no hard links on this file system: best effort instead
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        if not final.exists():
            os.replace(tmp, final)
            return
    tmp.unlink(missing_ok=True)


def _clean_dir(folder: Path, max_age: float) -> int:
    """Remove `.tmp-*` files older than `max_age` seconds from one folder."""
    removed = 0
    limit = time.time() - max_age
    with os.scandir(folder) as it:
        for entry in it:
            if not entry.name.startswith(TEMP_PREFIX):
                continue
            with contextlib.suppress(FileNotFoundError):  # a writer may just have renamed it
                if entry.stat().st_mtime < limit:
                    Path(entry.path).unlink()
                    removed += 1
    return removed


def _parse_partition(name: str, key: str) -> str | None:
    prefix = key + "="
    return name[len(prefix):] if name.startswith(prefix) else None


class ParquetLake:
    """Lake on a local (or mounted) file system."""

    def __init__(self, root: Path, compression: Compression = "zstd",
                 compression_level: int = 9) -> None:
        self.root = Path(root)
        self.compression = compression
        self.compression_level = compression_level
        self.root.mkdir(parents=True, exist_ok=True)

    # -- writing -----------------------------------------------------------------------------

    def write_span(self, dataset: Dataset, span: Span, table: pa.Table) -> list[str]:
        """One file per (date, hour) partition of `table`, named by `span`; idempotent."""
        table = _conform(dataset, table)
        if table.num_rows == 0:
            return []
        name = file_name(span)
        written: list[str] = []
        for hour, part in _split_by_hour(dataset, table):
            folder = partition_dir(self.root, dataset, hour)
            final = folder / name
            if not final.exists():
                _ensure_dir(folder, self.root)
                self._write_file(dataset, part, folder, final)
            written.append(str(final))
        return written

    def publish(self, dataset: Dataset, hour: int, name: str, table: pa.Table) -> Path:
        """Write one file durably into the partition of `hour` (create-if-absent, like
        write_span); `table` may be empty (an empty file supersedes, see live_files)."""
        folder = partition_dir(self.root, dataset, hour)
        final = folder / name
        if not final.exists():
            _ensure_dir(folder, self.root)
            self._write_file(dataset, _conform(dataset, table), folder, final)
        return final

    def remove(self, paths: list[str]) -> None:
        """Delete files (superseded ones) and fsync their folders."""
        folders = set()
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                folders.add(os.path.dirname(path))
        for folder in folders:
            _fsync_dir(Path(folder))

    def _write_file(self, dataset: Dataset, table: pa.Table, folder: Path, final: Path) -> None:
        tmp = folder / f"{TEMP_PREFIX}{final.stem}-{uuid.uuid4().hex}"
        try:
            with open(tmp, "wb") as f:
                pq.write_table(table, f, **self._options(dataset, table))
                f.flush()
                os.fsync(f.fileno())
            _link_or_leave(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(folder)
        _clean_dir(folder, STALE_TEMP_SECONDS)

    def _options(self, dataset: Dataset, table: pa.Table) -> dict[str, object]:
        level = self.compression_level if self.compression in ("zstd", "gzip") else None
        common: dict[str, object] = {
            "compression": self.compression, "compression_level": level,
            "row_group_size": ROW_GROUP_SIZE, "write_statistics": True,
            # The Parquet types already say everything READING_SCHEMA needs (UTC timestamps,
            # int16, required columns); skipping the Arrow schema copy saves ~800 B per file.
            "store_schema": False,
            "sorting_columns": [pq.SortingColumn(table.schema.get_field_index(c))
                                for c in SORT_KEY[dataset]],
        }
        if dataset == "readings":
            return {
                **common,
                "use_dictionary": ["tenant", "device_id", "metric", "value", "quality",
                                   "lat", "lon"],
                "column_encoding": {"ts": "DELTA_BINARY_PACKED",
                                    "received_at": _received_at_encoding(table)},
            }
        return {
            **common,
            "use_dictionary": ["tenant", "device_id", "source", "codec"],
            "column_encoding": {"offset": "DELTA_BINARY_PACKED",
                                "received_at": "DELTA_BINARY_PACKED"},
        }

    def clean_temp(self, max_age: float = STALE_TEMP_SECONDS) -> int:
        """Remove temp files a crash left behind (older than `max_age` seconds)."""
        return sum(_clean_dir(folder, max_age) for folder in self._all_partitions())

    # -- reading -----------------------------------------------------------------------------

    def glob(self, dataset: Dataset) -> str:
        """Pattern for read_parquet(..., hive_partitioning=true) over the whole dataset."""
        return str(self.root / dataset / "*" / "*" / "*.parquet")

    def files(self, dataset: Dataset, start: datetime | None = None,
              end: datetime | None = None) -> list[str]:
        """Files of the partitions that can hold rows in [start, end), pruned by folder name."""
        lo = _hour_index(start) if start is not None else None
        hi = _hour_index(end - timedelta(microseconds=1)) if end is not None else None
        out: list[str] = []
        for _, _, live in self.partition_files(dataset, lo, hi):
            out.extend(f.path for f in live)
        return out

    def partition_files(self, dataset: Dataset, lo: int | None = None, hi: int | None = None,
                        ) -> Iterator[tuple[int, Path, list[LakeFile]]]:
        """(hour index, folder, live files) per partition between hour indexes lo and hi."""
        for hour, folder in self._partitions(dataset, lo, hi):
            yield hour, folder, live_files(self.folder_files(folder))

    @staticmethod
    def folder_files(folder: Path) -> list[LakeFile]:
        """Every named part file of one partition folder, superseded ones included."""
        with os.scandir(folder) as it:
            parsed = [parse_file(e.path) for e in it if not e.name.startswith(".")]
        return [f for f in parsed if f is not None]

    def _partitions(self, dataset: str, lo: int | None,
                    hi: int | None) -> Iterator[tuple[int, Path]]:
        base = self.root / dataset
        if not base.is_dir():
            return
        lo_day = None if lo is None else lo // 24
        hi_day = None if hi is None else hi // 24
        for day_dir in sorted(base.iterdir()):
            text = _parse_partition(day_dir.name, "date")
            if text is None or not day_dir.is_dir():
                continue
            try:
                day = (date.fromisoformat(text) - date(1970, 1, 1)).days
            except ValueError:
                continue
            if (lo_day is not None and day < lo_day) or (hi_day is not None and day > hi_day):
                continue
            for hour_dir in sorted(day_dir.iterdir()):
                hh = _parse_partition(hour_dir.name, "hour")
                if hh is None or not hh.isdigit() or not hour_dir.is_dir():
                    continue
                hour = day * 24 + int(hh)
                if (lo is None or hour >= lo) and (hi is None or hour <= hi):
                    yield hour, hour_dir

    def _all_partitions(self) -> Iterator[Path]:
        for dataset in SCHEMAS:
            for _, folder in self._partitions(dataset, None, None):
                yield folder


def _hour_index(at: datetime) -> int:
    if at.tzinfo is None:
        raise ValueError(f"naive datetime {at!r}: pass a timezone-aware (UTC) datetime")
    delta = at - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) // 3600


def _conform(dataset: Dataset, table: pa.Table) -> pa.Table:
    """`table` with exactly the dataset's columns and types (extra columns such as msg_id
    are dropped)."""
    if dataset not in SCHEMAS:
        raise ValueError(f"unknown lake dataset {dataset!r}: use 'raw' or 'readings'")
    schema = SCHEMAS[dataset]
    return table.select(schema.names).cast(schema)


def _split_by_hour(dataset: Dataset, table: pa.Table) -> Iterator[tuple[int, pa.Table]]:
    """(hour since epoch, rows of that hour sorted by the dataset's sort key), vectorized."""
    us = pc.cast(table.column(PARTITION_KEY[dataset]), pa.int64()).to_numpy()
    hours = np.floor_divide(us, HOUR_US)
    keyed = table.append_column("__hour", pa.array(hours, pa.int64()))
    keys = ("__hour", *SORT_KEY[dataset])
    if not is_sorted(keyed, keys):  # a store that reads the span back in order saves this
        keyed = keyed.sort_by([(c, "ascending") for c in keys])
    sorted_hours = keyed.column("__hour").to_numpy()
    body = keyed.drop_columns(["__hour"])
    cuts = [0, *(np.flatnonzero(np.diff(sorted_hours)) + 1).tolist(), len(sorted_hours)]
    for a, b in itertools.pairwise(cuts):
        yield int(sorted_hours[a]), body.slice(a, b - a).combine_chunks()


def is_sorted(table: pa.Table, keys: tuple[str, ...]) -> bool:
    """Whether the rows are in ascending order of `keys` (one linear pass, vectorized: much
    cheaper than sorting strings again)."""
    if table.num_rows < 2:
        return True
    ordered = None  # per adjacent pair: known to be in order by an earlier key
    tied = None  # per adjacent pair: equal on every key so far
    for key in keys:
        column = table.column(key)
        a, b = column.slice(0, len(column) - 1), column.slice(1)
        less, equal = pc.less(a, b), pc.equal(a, b)
        if tied is None:
            ordered, tied = less, equal
        else:
            ordered = pc.or_(ordered, pc.and_(tied, less))
            tied = pc.and_(tied, equal)
    return bool(pc.all(pc.fill_null(pc.or_(ordered, tied), False)).as_py())


def _received_at_encoding(table: pa.Table) -> str:
    """BYTE_STREAM_SPLIT when messages carry several metrics (each received_at repeats, and
    zstd finds the repeated byte streams); DELTA_BINARY_PACKED when every row arrived alone."""
    distinct = pc.count_distinct(table.column("received_at")).as_py()
    return "BYTE_STREAM_SPLIT" if distinct * 2 <= table.num_rows else "DELTA_BINARY_PACKED"
