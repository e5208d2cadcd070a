"""Lake compaction: merge the small per-span files of a partition into larger ones.

The worker writes one file per partition per lake flush (every minute), so an hour holds
about sixty small files. Compaction rewrites runs of consecutive files of one partition as one
file named by the union of their spans, `part-<first>-<last>.parquet`:

1. only partitions whose hour ended `compaction.min_age_seconds` ago, and only files whose span
   the worker acknowledged (a span in flight is never touched);
2. the merged file is written to a temp file, fsynced and hard-linked into the folder: from
   that one link on, `ParquetLake.files()` (and so every sensorlake query) sees the merged file
   and no longer the files it covers (`live_files`), never both;
3. then the covered files are deleted. A crash before the link leaves a temp file (removed
   later); after it, covered files that readers already ignore and the next run deletes.

Rows are never changed, only moved: the merged file holds exactly the union of its inputs,
which already hold disjoint reading keys, so the no-duplicates invariant is kept. Running it
again finds nothing to merge (idempotent).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from sensorlake.log.base import Span
from sensorlake.store.lake import (
    HOUR_US,
    SCHEMAS,
    SORT_KEY,
    Dataset,
    LakeFile,
    ParquetLake,
    file_name,
    live_files,
)

DATASETS: tuple[Dataset, ...] = ("raw", "readings")


@dataclass
class CompactionResult:
    partitions: int = 0
    files_in: int = 0
    files_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    removed_superseded: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def plan_runs(files: list[LakeFile], acked: int, target_bytes: int) -> list[list[LakeFile]]:
    """Groups of >= 2 consecutive acknowledged files, each up to about `target_bytes`."""
    done = sorted((f for f in files if f.last <= acked), key=lambda f: f.first)
    groups: list[list[LakeFile]] = []
    current: list[LakeFile] = []
    size = 0
    for f in done:
        fsize = f.size
        if current and size + fsize > target_bytes:
            groups.append(current)
            current, size = [], 0
        current.append(f)
        size += fsize
    groups.append(current)
    return [g for g in groups if len(g) >= 2]


def compact(lake: ParquetLake, acked: int, target_bytes: int = 128 << 20,
            min_age_seconds: float = 7200, now: float | None = None,
            progress: object = None) -> CompactionResult:
    """Compact every old-enough partition of `raw/` and `readings/`."""
    result = CompactionResult()
    now = time.time() if now is None else now
    newest_hour = int((now - min_age_seconds) * 1_000_000 // HOUR_US) - 1
    todo = [(dataset, hour, folder) for dataset in DATASETS
            for hour, folder, _ in lake.partition_files(dataset, None, newest_hour)]
    for index, (dataset, hour, folder) in enumerate(todo):
        every = lake.folder_files(folder)
        live = {f.path for f in live_files(every)}
        stale = [f.path for f in every if f.path not in live and f.last <= acked]
        if stale:  # covered by a merged file that a crash left them beside
            lake.remove(stale)
            result.removed_superseded += len(stale)
        groups = plan_runs([f for f in every if f.path in live], acked, target_bytes)
        if groups:
            result.partitions += 1
        for group in groups:
            merged = _merge(dataset, group)
            name = file_name(Span(group[0].first, group[-1].last))
            result.bytes_in += sum(f.size for f in group)
            path = lake.publish(dataset, hour, name, merged)
            lake.remove([f.path for f in group if f.path != str(path)])
            result.files_in += len(group)
            result.files_out += 1
            result.bytes_out += path.stat().st_size
        if callable(progress):
            progress(index + 1, len(todo), result)
    return result


def _merge(dataset: Dataset, group: list[LakeFile]) -> pa.Table:
    schema = SCHEMAS[dataset]
    tables = [pq.read_table(f.path).select(schema.names).cast(schema) for f in group]
    merged = pa.concat_tables(tables)
    return merged.sort_by([(c, "ascending") for c in SORT_KEY[dataset]])
