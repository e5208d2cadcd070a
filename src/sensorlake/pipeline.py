"""The pipeline, top to bottom: read -> decode -> stages -> sinks -> ack.

    log.read ─▶ decode ─▶ validate ─▶ dedup ─▶ enrich ─▶ quality ─▶ aqi ─▶ hot store (commit)
                                                                      └─▶ pending lake span
    every lake_flush_seconds / lake_flush_rows:
        log.claim(span) ─▶ lake raw/ + readings/ files (create-if-absent, fsync) ─▶ log.ack(span)
        (on a lake thread while the worker goes on; one flush in flight, the next span waits)

The hot store commits every batch so readings are queryable within a second, and tags each
row with the log offset of the message that first stored it; the log is acknowledged only
after the lake files of the span are durable. Those files hold exactly the rows the span
inserted (`hot.span_readings`), so a reading that arrives again in a later message never
reaches the lake twice. A crash between the two replays the span from the log: the hot store
ignores rows it already has, the claim makes the replay cut exactly the same span, and the
span's rows are read back from the hot store, so lake files get the same names and content.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc

from sensorlake.config import Settings
from sensorlake.decode import decode
from sensorlake.decode.lineprotocol import MANY_DEVICES, named_devices
from sensorlake.errors import TransientError
from sensorlake.log.base import Log, LogBatch, Span
from sensorlake.pipeline_work import ComputedBatch, InThread, LakeFlush, PendingSpan
from sensorlake.process.base import Batch, Context, Stage, commit_stages, rollback_stages
from sensorlake.process.stages import default_stages
from sensorlake.store.base import HOT_SCHEMA, QUARANTINE_SCHEMA, HotStore, Lake, Quarantine

log = logging.getLogger(__name__)

CONSUMER = "worker"




def quarantine_rows(rejects: pa.Table, entries: pa.Table) -> pa.Table:
    """Attach each reject's source, arrival time and raw bytes from its log entry."""
    index = pc.index_in(rejects.column("msg_id"), value_set=entries.column("msg_id"))
    columns = {name: rejects.column(name) for name in rejects.column_names}
    for name in ("source", "received_at", "payload"):
        columns[name] = entries.column(name).take(index)
    return pa.table(columns).cast(QUARANTINE_SCHEMA)


@dataclass
class WorkerStats:
    """Counters for status and tests (monotonic since start)."""

    messages: int = 0
    readings: int = 0
    stored: int = 0
    rejects: int = 0
    lake_flushes: int = 0
    last_hot_commit: datetime | None = None
    last_lake_commit: datetime | None = None
    errors: int = 0
    last_error: str | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    """Per stage (decode, each stage, hot, quarantine, lake): seconds spent, cumulative."""
    stage_rows: dict[str, int] = field(default_factory=dict)
    """Per stage: rows that entered it (envelopes for decode, readings after), cumulative."""

    def timed(self, stage: str, since: float, rows: int) -> float:
        """Add the time since `since` and `rows` to `stage` (once per batch); returns now."""
        now = time.perf_counter()
        self.add(stage, now - since, rows)
        return now

    def add(self, stage: str, seconds: float, rows: int) -> None:
        """Add `seconds` and `rows` to `stage` (once per batch)."""
        self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds
        self.stage_rows[stage] = self.stage_rows.get(stage, 0) + rows


def run_stages(entries: LogBatch, stages: list[Stage], ctx: Context,
               stats: WorkerStats | None = None) -> Batch:
    """Decode a log batch and run it through the stages (timed per stage into `stats`)."""
    clock = time.perf_counter()
    batch = decode(entries.table)
    if stats is not None:
        clock = stats.timed("decode", clock, len(entries))
    for stage in stages:
        rows = batch.readings.num_rows
        batch = stage.process(batch, ctx)
        if stats is not None:
            clock = stats.timed(stage.name, clock, rows)
    return batch


STEP_BATCHES = 8
"""Most batches one `Worker.step` takes (then the run loop looks at its stop event)."""


def run_isolating(entries: LogBatch, stages: list[Stage], ctx: Context,
                  stats: WorkerStats | None = None) -> Batch:
    """Run the stages; if they crash on some input, split the batch until the envelope that
    triggers it is alone, and quarantine that one. Nothing stops the worker (or a replay)."""
    try:
        return run_stages(entries, stages, ctx, stats)
    except TransientError:
        raise
    except Exception as exc:
        rollback_stages(stages)
        table = entries.table
        if table.num_rows == 1:
            log.exception("stages failed on %s", table.column("msg_id")[0])
            return Batch(rejects=pa.table({
                "msg_id": table.column("msg_id"), "tenant": table.column("tenant"),
                "device_id": table.column("device_id"), "stage": ["pipeline"],
                "field": pa.nulls(1, pa.string()), "value": pa.nulls(1, pa.string()),
                "reason": [f"internal error while processing this message "
                           f"({type(exc).__name__}: {exc}); it is kept here with its raw "
                           "bytes - please report it"],
            }).cast(Batch().rejects.schema))
        half = table.num_rows // 2
        left = run_isolating(LogBatch(table.slice(0, half)), stages, ctx, stats)
        right = run_isolating(LogBatch(table.slice(half)), stages, ctx, stats)
        return Batch(pa.concat_tables([left.readings, right.readings]),
                     pa.concat_tables([left.rejects, right.rejects]))


class Worker:
    """Drives batches from the log through the stages into the sinks. One thread runs the
    stages; beside it run the hot-store write of the batch before (while this one's stages
    run) and the lake flush in flight, when `worker.lake_background`."""

    def __init__(self, settings: Settings, log_: Log, hot: HotStore, lake: Lake,
                 quarantine: Quarantine, context: Callable[[], Context],
                 stages: list[Stage] | None = None, consumer: str = CONSUMER,
                 on_unknown_devices: Callable[[list[tuple[str, str]]], None] | None = None,
                 ) -> None:
        self.settings = settings
        self.log = log_
        self.hot = hot
        self.lake = lake
        self.quarantine = quarantine
        self.context = context
        self.stages = stages if stages is not None else default_stages()
        self.consumer = consumer
        self.stats = WorkerStats()
        self._pending = PendingSpan()
        self._cursor = log_.position(consumer)
        self._on_unknown_devices = on_unknown_devices
        self._short_batch = False
        self._last_read = 0.0
        self._last_rollup = time.monotonic()
        self._rollups_due = True  # marks left by a crash or an upgrade are refreshed first
        self._flushing: LakeFlush | None = None
        self._refreshing: threading.Thread | None = None
        self._read_at = self._cursor
        """Where the next read starts: past the batch whose write may still be in flight."""
        self._storing: ComputedBatch | None = None

    @property
    def cursor(self) -> int:
        """The highest offset processed into the hot store (the lake may lag behind)."""
        return self._cursor

    def recover(self) -> None:
        """Finish a span claimed before a crash, exactly as it was cut."""
        span = self.log.claimed(self.consumer)
        if span is None:
            return
        log.info("resuming claimed span %s..%s", span.first, span.last)
        self._process(self.log.read_span(span))
        self._flush_lake(span)
        self._cursor = self._read_at = span.last

    def step(self, wait: float | None = None) -> int:
        """Process what the log holds, up to STEP_BATCHES batches, and flush the lake when
        due; everything read is in the hot store on return. Returns envelopes read.

        While the worker is behind (full batches), each batch's stages run while the hot
        store commits the batch before (`worker.overlap_writes`)."""
        worker = self.settings.worker
        if self._short_batch:
            rest = worker.linger_seconds - (time.monotonic() - self._last_read)
            if rest > 0:
                time.sleep(rest)
        self._last_read = time.monotonic()
        entries = self._read(worker.poll_seconds if wait is None else wait)
        read = 0
        try:
            for _ in range(STEP_BATCHES):
                span = entries.span
                if span is None:
                    break
                read += len(entries)
                self._short_batch = len(entries) < worker.batch_messages and \
                    entries.payload_bytes() < worker.batch_bytes // 2
                computed = self._compute(entries)
                self._finish_store()
                self._read_at = span.last
                if self._short_batch or not worker.overlap_writes:
                    self._write(computed)
                    self._stored(computed)
                    break
                computed.write = InThread("sensorlake-hot", lambda c=computed: self._write(c))
                self._storing = computed
                self.refresh_rollups_if_due()
                self.flush_if_due()
                entries = self._read(0)  # the next batch's stages overlap this commit
        except BaseException:
            if self._storing is not None and self._storing.write is not None:
                self._storing.write.wait()  # not booked: the retry re-reads its batch
            self._storing = None
            raise
        self._finish_store()
        self.refresh_rollups_if_due()
        self.flush_if_due()
        return read

    def _read(self, wait: float) -> LogBatch:
        worker = self.settings.worker
        return self.log.read(self._read_at, worker.batch_messages, worker.batch_bytes,
                             wait=wait)

    def _finish_store(self) -> None:
        """Wait for the hot-store write in flight; then its batch counts as processed."""
        computed, self._storing = self._storing, None
        if computed is None or computed.write is None:
            return
        computed.write.wait()
        if computed.write.error is not None:
            raise computed.write.error
        self._stored(computed)

    def _stored(self, computed: ComputedBatch) -> None:
        """A batch the hot store committed joins the pending lake span; the cursor passes it."""
        span = computed.entries.span
        assert span is not None
        self._book(computed)
        pending = self._pending
        if pending.first is None:
            pending.first, pending.since = span.first, time.monotonic()
        pending.last = span.last
        pending.rows += computed.readings.num_rows
        pending.keep(computed.entries.table)
        self._cursor = span.last
        self._rollups_due = True

    def _book(self, computed: ComputedBatch) -> None:
        """After a batch's commit: the stages keep what it taught them; counters."""
        commit_stages(self.stages)
        stats, rejects = self.stats, computed.batch.rejects.num_rows
        stats.add("hot", computed.hot_seconds, computed.readings.num_rows)
        if rejects:
            stats.add("quarantine", computed.quarantine_seconds, rejects)
        stats.messages += len(computed.entries)
        stats.readings += computed.readings.num_rows
        stats.stored += computed.stored
        stats.rejects += rejects
        stats.last_hot_commit = datetime.now(UTC)

    def refresh_rollups_if_due(self, force: bool = False) -> None:
        """Recompute the dirty rollup buckets every `rollups.refresh_seconds` (stores without
        rollups are skipped). Idle, it still looks for marks left by replays or a crash: a
        refresh with nothing dirty is one count (about a millisecond)."""
        refresh = getattr(self.hot, "refresh_rollups", None)
        settings = self.settings.rollups
        if refresh is None or not settings.enabled:
            return
        if not force and time.monotonic() - self._last_rollup < settings.refresh_seconds:
            return
        running = self._refreshing
        if running is not None and running.is_alive():
            if not force:
                return  # one refresh at a time; the next starts when it is done
            running.join()
        due = self._rollups_due
        self._last_rollup = time.monotonic()
        self._rollups_due = False

        def work() -> None:
            clock = time.perf_counter()
            try:
                result = refresh(max_marks=settings.refresh_max_minutes)
            except TransientError as exc:  # the marks stay: the next refresh redoes them
                self._note_error(exc)
                return
            if result.minutes or result.skipped or due:
                self.stats.timed("rollups", clock, result.minutes)

        if force or not settings.background:
            work()
        else:  # DuckDB releases the GIL: the refresh runs on the other core meanwhile
            self._refreshing = threading.Thread(target=work, name="sensorlake-rollups",
                                                daemon=True)
            self._refreshing.start()

    def flush_if_due(self, force: bool = False) -> None:
        """Claim the pending span and write it to the lake when it is due (`force`: now, and
        wait until every flush is durable). A failed background flush raises here. The raw/
        file comes from the entries the worker already read, when it kept them."""
        self._collect_flush(wait=force)
        pending = self._pending
        if pending.first is None or self._flushing is not None:
            return  # nothing to flush, or one flush in flight: the span keeps growing
        due = (force or pending.rows >= self.settings.worker.lake_flush_rows
               or time.monotonic() - pending.since >= self.settings.worker.lake_flush_seconds)
        if due:
            span = Span(pending.first, pending.last)
            self.log.claim(self.consumer, span)
            self._pending = PendingSpan()
            raw = pending.raw()

            def write(span: Span) -> None:
                self._flush_lake(span, raw)

            if force or not self.settings.worker.lake_background:
                write(span)
            else:
                self._flushing = LakeFlush(span, write)

    def _collect_flush(self, wait: bool) -> None:
        flush = self._flushing
        if flush is None or not (wait or flush.done()):
            return
        flush.wait()
        self._flushing = None
        if flush.error is not None:
            raise flush.error

    def _process(self, entries: LogBatch) -> Batch:
        """Stages and hot-store write of one batch, here and now (recovery)."""
        computed = self._compute(entries)
        self._write(computed)
        self._book(computed)
        return computed.batch

    def _compute(self, entries: LogBatch) -> ComputedBatch:
        ctx = self.context()
        if self._on_unknown_devices is not None and self.settings.ingest.auto_register:
            ctx = self._register_unknown(entries, ctx)
        batch = run_isolating(entries, self.stages, ctx, self.stats)
        table = entries.table
        offsets = table.column("offset").take(
            pc.index_in(batch.readings.column("msg_id"), value_set=table.column("msg_id")))
        readings = batch.readings.append_column("log_offset", offsets) \
            .select(HOT_SCHEMA.names).cast(HOT_SCHEMA)
        return ComputedBatch(entries, batch, readings)

    def _write(self, computed: ComputedBatch) -> None:
        """The hot store's commit, then the quarantine's, timed into `computed`. Touches no
        stage state, so it may run beside the next batch's stages."""
        clock = time.perf_counter()
        computed.stored = self.hot.write(computed.readings)
        done = time.perf_counter()
        computed.hot_seconds = done - clock
        rejects = computed.batch.rejects
        if rejects.num_rows:
            self.quarantine.write(quarantine_rows(rejects, computed.entries.table))
            computed.quarantine_seconds = time.perf_counter() - done

    def _register_unknown(self, entries: LogBatch, ctx: Context) -> Context:
        seen = set(zip(entries.table.column("tenant").to_pylist(),
                       entries.table.column("device_id").to_pylist(), strict=True))
        if any(device == MANY_DEVICES for _, device in seen):
            seen = {p for p in seen if p[1] != MANY_DEVICES} | named_devices(
                entries.table, self.settings.line_protocol)
        known = set(zip(ctx.devices.column("tenant").to_pylist(),
                        ctx.devices.column("device_id").to_pylist(), strict=True))
        unknown = sorted(p for p in seen - known if p[1])
        if unknown and self._on_unknown_devices is not None:
            self._on_unknown_devices(unknown)
            return self.context()
        return ctx

    def _flush_lake(self, span: Span, raw: pa.Table | None = None) -> None:
        clock = time.perf_counter()
        readings = self.hot.span_readings(span.first, span.last)
        if raw is None or raw.column("offset")[0].as_py() != span.first \
                or raw.column("offset")[-1].as_py() != span.last:
            raw = self.log.read_span(span).table
        self.lake.write_span("raw", span, raw)
        if readings.num_rows:
            self.lake.write_span("readings", span, readings)
        self.log.ack(self.consumer, span)
        self.stats.timed("lake", clock, readings.num_rows)
        self.stats.lake_flushes += 1
        self.stats.last_lake_commit = datetime.now(UTC)

    def run(self, stop: threading.Event, max_batches: int | None = None) -> None:
        """Loop until `stop` is set; transient sink errors back off and retry the batch."""
        self.recover()
        batches = 0
        backoff = 0.5
        while not stop.is_set():
            try:
                if self.step():
                    batches += 1
                backoff = 0.5
            except TransientError as exc:
                self._note_error(exc)
                stop.wait(backoff)
                backoff = min(backoff * 2, 30)
                self._rewind()
            if max_batches is not None and batches >= max_batches:
                break
        try:
            self.refresh_rollups_if_due(force=True)
        except TransientError as exc:
            self._note_error(exc)
        self.flush_if_due(force=True)

    def _rewind(self) -> None:
        """After a failed batch, re-read from the last acknowledged offset."""
        if self._storing is not None and self._storing.write is not None:
            self._storing.write.wait()  # its batch is read and written again: idempotent
        self._storing = None
        if self._flushing is not None:  # let it end; recover() redoes its span if it failed
            self._flushing.wait()
            self._flushing = None
        self._pending = PendingSpan()
        rollback_stages(self.stages)
        self._cursor = self._read_at = self.log.position(self.consumer)
        self.recover()

    def _note_error(self, exc: Exception) -> None:
        self.stats.errors += 1
        self.stats.last_error = str(exc)
        log.warning("worker: %s (will retry)", exc)
