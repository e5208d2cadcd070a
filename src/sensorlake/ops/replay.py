"""Replay: rebuild readings, derived metrics and rollups from the lake's `raw/` envelopes.

    sensorlake replay --from 2026-11-01 --to 2026-11-08 [--device aq-0001] [--tenant T]

After a codec, calibration or formula fix, the stored readings are wrong and the raw bytes
are right. A replay re-decodes the envelopes that *arrived* in [from, to) through the normal
codecs and stages and puts the results in place of what those envelopes produced before:

- Unit of work: a closed interval of log offsets [A, B], widened until no lake file (raw/ or
  readings/, any partition) straddles its ends, taken one UTC day of arrivals at a time so
  memory stays bounded. Only acknowledged offsets are replayed.
- Hot store: `replace_span` deletes, in one transaction, the rows those offsets first stored
  (of the tenant / device asked for) and inserts the re-derived ones insert-if-absent, so a
  corrected value *replaces* the old one (plain insert-if-absent would keep the old value) and
  `latest` follows. A key still held by another offset keeps that copy (no duplicates).
- Lake: the `readings/` rows of [A, B] are written again as `part-A-B[-gN].parquet` in each
  partition, a file that supersedes the old ones (`store/lake.py: live_files`); partitions
  left without rows get an empty file that supersedes theirs; then the old files are
  deleted. Rows of other tenants or devices in the span are carried over from the old files.
- A partition whose rows came out identical is not touched: replaying twice changes nothing.
- Rebuilders (rollups, issue 5) registered with `register_rebuilder` are called per day with
  the tenant, device, time range touched.

Both profiles: "acknowledged" is the embedded log's acked offset or the server exporter's
`lake_export` mark (`runtime.exported_offset()`); the stages are the replay's own (the running
worker keeps its state); each day holds HOT_REWRITE_LOCK and, on PostgreSQL, the
`hot-rewrite` advisory lock, so retention in no process drops re-inserted rows before the
lake has them. The lake must be on a local disk (files are superseded by hard links).

Limitation: a reading first stored by an envelope *outside* [A, B] whose row already left
the hot store (retention) is not seen by the insert-if-absent check; if the fixed codec now
also produces that key inside [A, B], the lake holds it twice. Replays of the last
hot.retention_days (the usual case after a fix) are exact.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sensorlake.decode.lineprotocol import MANY_DEVICES
from sensorlake.errors import ConfigError, InputError
from sensorlake.log.base import LOG_ENTRY_SCHEMA, LogBatch, Span
from sensorlake.model import READING_SCHEMA
from sensorlake.ops.jobs import JobContext
from sensorlake.pipeline import quarantine_rows, run_isolating
from sensorlake.process.base import Stage, commit_stages
from sensorlake.process.stages import default_stages
from sensorlake.store.base import HOT_SCHEMA
from sensorlake.store.lake import HOUR_US, SORT_KEY, LakeFile, ParquetLake, file_name
from sensorlake.timeparse import parse_time

CHUNK_ENVELOPES = 5000
HOT_REWRITE_LOCK = threading.Lock()
"""Held by a replay window and by the retention job: retention must not delete re-inserted
rows of a replay before their lake files are rewritten."""
Rebuilder = Callable[[str | None, str | None, datetime, datetime], None]
REBUILDERS: list[Rebuilder] = []


def register_rebuilder(fn: Rebuilder) -> Rebuilder:
    """Called after each replayed day with (tenant or None, device or None, start, end) of
    the reading times touched, to recompute what derives from readings (rollups)."""
    REBUILDERS.append(fn)
    return fn


@dataclass
class ReplayResult:
    envelopes: int = 0
    readings_before: int = 0
    readings_after: int = 0
    lake_partitions_rewritten: int = 0
    lake_partitions_unchanged: int = 0
    spans: list[str] = field(default_factory=list)


def _all_files(lake: ParquetLake, dataset: str) -> list[tuple[int, LakeFile]]:
    return [(hour, f) for hour, _, live in lake.partition_files(dataset)  # type: ignore[arg-type]
            for f in live]


def closure(a: int, b: int, files: list[LakeFile]) -> tuple[int, int]:
    """Widen [a, b] until no file straddles its ends."""
    while True:
        lo = min([a, *(f.first for f in files if f.first <= b and f.last >= a)])
        hi = max([b, *(f.last for f in files if f.first <= b and f.last >= a)])
        if (lo, hi) == (a, b):
            return a, b
        a, b = lo, hi


def _read(files: list[LakeFile], schema: pa.Schema) -> pa.Table:
    tables = [pq.read_table(f.path).select(schema.names).cast(schema) for f in files]
    return pa.concat_tables(tables) if tables else schema.empty_table()


def _matches(table: pa.Table, tenant: str | None, device: str | None) -> pa.Array:
    """Rows of the tenant and device asked for; log entries of many devices (line protocol,
    device id `*`) match any device, and what they derive is filtered after decoding."""
    mask = pa.array([True] * table.num_rows, pa.bool_())
    if tenant is not None:
        mask = pc.and_(mask, pc.equal(table.column("tenant"), tenant))
    if device is not None:
        ids = table.column("device_id")
        mask = pc.and_(mask, pc.or_(pc.equal(ids, device), pc.equal(ids, MANY_DEVICES)))
    return mask


def replay_range(rt: Any, start: datetime, end: datetime, tenant: str | None = None,
                 device: str | None = None,
                 progress: Callable[[int, int], None] | None = None) -> ReplayResult:
    """Replay the envelopes that arrived in [start, end) (see the module docstring)."""
    if not isinstance(rt.lake, ParquetLake):
        raise ConfigError("replay rewrites lake files in place and needs the lake on a local "
                          "disk; with the lake on S3 (s3.bucket) it is not available yet")
    result = ReplayResult()
    stages = default_stages()  # its own: the running worker's stages keep their state
    guard = getattr(rt.hot, "rewrite_guard", contextlib.nullcontext)
    day = start
    while day < end:
        nxt = min(end, day + timedelta(days=1))
        with HOT_REWRITE_LOCK, guard():  # no retention meanwhile, here or elsewhere
            _replay_window(rt, stages, day, nxt, tenant, device, result, progress)
        day = nxt
    return result


def _replay_window(rt: Any, stages: list[Stage], start: datetime, end: datetime,
                   tenant: str | None, device: str | None, result: ReplayResult,
                   progress: Callable[[int, int], None] | None) -> None:
    lake: ParquetLake = rt.lake
    acked = rt.exported_offset()  # embedded: the log's acknowledged offset; server: exported
    lo, hi = _hour(start), _hour(end - timedelta(microseconds=1))
    raw_here = [f for _, _, live in lake.partition_files("raw", lo, hi) for f in live]
    arrived = _read(raw_here, LOG_ENTRY_SCHEMA)
    us = pc.cast(arrived.column("received_at"), pa.int64())
    arrived = arrived.filter(pc.and_(
        pc.and_(pc.greater_equal(us, _us(start)), pc.less(us, _us(end))),
        pc.and_(_matches(arrived, tenant, device),
                pc.less_equal(arrived.column("offset"), acked))))
    if arrived.num_rows == 0:
        return
    raw_all = _all_files(lake, "raw")
    readings_all = _all_files(lake, "readings")
    a, b = closure(pc.min(arrived.column("offset")).as_py(),
                   pc.max(arrived.column("offset")).as_py(),
                   [f for _, f in raw_all + readings_all])
    if b > acked:
        raise InputError(f"offsets up to {b} are still being written to the lake; replay "
                         "again in a minute")
    entries = _read([f for _, f in raw_all if f.first <= b and f.last >= a], LOG_ENTRY_SCHEMA)
    entries = entries.filter(pc.and_(
        pc.and_(pc.greater_equal(entries.column("offset"), a),
                pc.less_equal(entries.column("offset"), b)),
        _matches(entries, tenant, device))).sort_by("offset")
    before = rt.hot.span_readings(a, b)
    result.readings_before += before.filter(_matches(before, tenant, device)).num_rows
    touched: list[pa.Table] = [before.select(["ts"])]
    devices = (device,) if device else None
    for first in range(0, entries.num_rows, CHUNK_ENVELOPES):
        part = entries.slice(first, CHUNK_ENVELOPES)
        lo_off = a if first == 0 else part.column("offset")[0].as_py()
        hi_off = b if first + CHUNK_ENVELOPES >= entries.num_rows else \
            entries.column("offset")[first + CHUNK_ENVELOPES].as_py() - 1
        readings = _derive(rt, stages, part, tenant, device)
        rt.hot.replace_span(lo_off, hi_off, readings, devices, tenant)
        commit_stages(stages)
        touched.append(readings.select(["ts"]))
        result.envelopes += part.num_rows
        if progress:
            progress(result.envelopes, entries.num_rows)
    if entries.num_rows == 0:  # nothing of this tenant/device left: remove what it had
        rt.hot.replace_span(a, b, HOT_SCHEMA.empty_table(), devices, tenant)
    after = rt.hot.span_readings(a, b)
    result.readings_after += after.filter(_matches(after, tenant, device)).num_rows
    _rewrite_lake(lake, Span(a, b), after, tenant, device,
                  [(h, f) for h, f in readings_all if a <= f.first and f.last <= b], result)
    result.spans.append(f"{a}-{b}")
    stamps = pa.concat_tables(touched).column("ts")
    if len(stamps) and REBUILDERS:
        low, high = pc.min(stamps).as_py(), pc.max(stamps).as_py() + timedelta(microseconds=1)
        for rebuild in REBUILDERS:
            rebuild(tenant, device, low, high)


def _derive(rt: Any, stages: list[Stage], entries: pa.Table, tenant: str | None,
            device: str | None) -> pa.Table:
    """Decode and run the stages exactly as a worker does; HOT_SCHEMA with log_offset, of
    the tenant and device asked for only."""
    ctx = rt.context()
    batch = run_isolating(LogBatch(entries), stages, ctx)
    readings, rejects = batch.readings, batch.rejects
    if device is not None:
        readings = readings.filter(_matches(readings, tenant, device))
        rejects = rejects.filter(_matches(rejects, tenant, device))
    if rejects.num_rows:
        rt.quarantine.write(quarantine_rows(rejects, entries))
    offsets = entries.column("offset").take(
        pc.index_in(readings.column("msg_id"), value_set=entries.column("msg_id")))
    return readings.append_column("log_offset", offsets).select(HOT_SCHEMA.names) \
        .cast(HOT_SCHEMA)


def _rewrite_lake(lake: ParquetLake, span: Span, hot_rows: pa.Table, tenant: str | None,
                  device: str | None, old: list[tuple[int, LakeFile]],
                  result: ReplayResult) -> None:
    """Write the readings of `span` again where they changed; superseded files go."""
    old_rows = _read([f for _, f in old], READING_SCHEMA)
    keep = old_rows.filter(pc.invert(_matches(old_rows, tenant, device))) \
        if tenant or device else READING_SCHEMA.empty_table()
    new = hot_rows.filter(_matches(hot_rows, tenant, device)).cast(READING_SCHEMA)
    rows = pa.concat_tables([keep, new])
    hours = pc.floor(pc.divide(pc.cast(pc.cast(rows.column("ts"), pa.int64()), pa.float64()),
                               float(HOUR_US))).cast(pa.int64()) if rows.num_rows else \
        pa.array([], pa.int64())
    wanted = {h: rows.filter(pc.equal(hours, h)) for h in pc.unique(hours).to_pylist()}
    by_hour: dict[int, list[LakeFile]] = {}
    for hour, f in old:
        by_hour.setdefault(hour, []).append(f)
    generation = 1 + max((f.generation for _, f in old if (f.first, f.last) == (span.first,
                                                                               span.last)),
                         default=-1)
    name = file_name(span, generation)
    obsolete: list[str] = []
    tombstones: list[str] = []
    for hour in sorted(set(wanted) | set(by_hour)):
        target = wanted.get(hour, READING_SCHEMA.empty_table())
        current = _read(by_hour.get(hour, []), READING_SCHEMA)
        if _same(current, target):
            result.lake_partitions_unchanged += 1
            continue
        path = lake.publish("readings", hour, name, target)
        obsolete += [f.path for f in by_hour.get(hour, []) if f.path != str(path)]
        if target.num_rows == 0:
            tombstones.append(str(path))
        result.lake_partitions_rewritten += 1
    lake.remove(obsolete)
    lake.remove(tombstones)


def _same(a: pa.Table, b: pa.Table) -> bool:
    if a.num_rows != b.num_rows:
        return False
    order = [(c, "ascending") for c in (*SORT_KEY["readings"], "value")]
    return a.sort_by(order).equals(b.sort_by(order))


def _hour(at: datetime) -> int:
    return _us(at) // HOUR_US


def _us(at: datetime) -> int:
    return (at.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def run_replay(ctx: JobContext) -> dict[str, Any]:
    """The `replay` job: params from, to (times), device and tenant (optional)."""
    p = ctx.params
    if not p.get("from") or not p.get("to"):
        raise InputError("replay needs params from and to (`sensorlake replay --from T --to T`)")
    start, end = parse_time(str(p["from"])), parse_time(str(p["to"]))
    if end <= start:
        raise InputError(f"empty range: --to ({end.isoformat()}) must be after --from")

    def progress(done: int, total: int) -> None:
        ctx.progress(done=done, total=total, rows_done=done)

    result = replay_range(ctx.runtime, start, end, p.get("tenant"), p.get("device"), progress)
    return dict(result.__dict__)
