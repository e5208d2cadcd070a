"""The server worker: JetStream deliveries -> decode -> stages -> one PostgreSQL commit -> ack.

    queue.fetch ─▶ decode ─▶ stages ─▶ hot.commit_batch(readings, offsets, rejects) ─▶ ack
                                       (one transaction: processed marks, readings, quarantine)

N workers share one durable consumer, so each sees interleaved offsets, and a message whose
ack was lost (or whose worker died or stalled past ack_wait) comes again, possibly to
another worker. That is safe because the commit marks every offset as processed in the same
transaction as its readings: a redelivered offset is skipped. The lake is written by the
exporter (`server/exporter.py`) from PostgreSQL, not by the workers.

While PostgreSQL is unavailable the worker keeps its batch, retries the commit with backoff
and tells JetStream the messages are in progress, so nothing is redelivered elsewhere and
nothing counts towards max_deliver; it fetches nothing new until the commit succeeded.
A message delivered jetstream.max_deliver times is quarantined with its raw bytes instead of
processed (some worker crashed or hung on it every time).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc

from sensorlake.config import Settings
from sensorlake.errors import TransientError
from sensorlake.log.base import LogBatch
from sensorlake.log.jetstream_consumer import Delivery, WorkQueue
from sensorlake.log.memory import Row, build_batch
from sensorlake.pipeline import Worker, WorkerStats, quarantine_rows, run_isolating
from sensorlake.process.base import Batch, Context, Stage, commit_stages, rollback_stages
from sensorlake.process.stages import default_stages
from sensorlake.store.base import HOT_SCHEMA, QUARANTINE_SCHEMA
from sensorlake.store.postgres import PostgresStore

log = logging.getLogger(__name__)


def exhausted_rejects(rows: list[Row], deliveries: int) -> pa.Table:
    """Quarantine rows (with log_offset) for messages JetStream gave up on."""
    entries = build_batch(rows).table
    n = entries.num_rows
    reason = (f"delivered {deliveries} times without being acknowledged (jetstream."
              "max_deliver): a worker crashed or hung on it each time; kept here with its raw "
              "bytes - replay it once the cause is fixed")
    rejects = pa.table({
        "msg_id": entries.column("msg_id"), "tenant": entries.column("tenant"),
        "device_id": entries.column("device_id"), "stage": ["delivery"] * n,
        "field": pa.nulls(n, pa.string()), "value": pa.nulls(n, pa.string()),
        "reason": [reason] * n})
    return quarantine_rows(rejects, entries).append_column("log_offset",
                                                           entries.column("offset"))


class ServerWorker:
    """One worker process's loop over the shared consumer (in one thread)."""

    _register_unknown = Worker._register_unknown

    def __init__(self, settings: Settings, queue: WorkQueue, hot: PostgresStore,
                 context: Callable[[], Context], stages: list[Stage] | None = None,
                 on_unknown_devices: Callable[[list[tuple[str, str]]], None] | None = None,
                 ) -> None:
        self.settings = settings
        self.queue = queue
        self.hot = hot
        self.context = context
        self.stages = stages if stages is not None else default_stages()
        self.stats = WorkerStats()
        self.waiting_since: float | None = None
        """monotonic time since which a commit has been failing (None when healthy)."""
        self._on_unknown_devices = on_unknown_devices

    def step(self, stop: threading.Event) -> int:
        """Fetch one batch, process it, commit it (retrying while the store is down), ack.
        Returns the messages handled."""
        cfg = self.settings.worker
        self._quarantine_exhausted(stop)
        fetch = min(cfg.batch_messages, self.settings.jetstream.fetch_messages)
        deliveries = self.queue.fetch(fetch, cfg.poll_seconds)
        if not deliveries:
            return 0
        limit = self.settings.jetstream.max_deliver
        last_chance = [d for d in deliveries if d.delivered >= limit]
        normal = sorted((d for d in deliveries if d.delivered < limit), key=lambda d: d.offset)
        readings, rejects = self._process([d.row for d in normal])
        if last_chance:
            rejects = pa.concat_tables([rejects, exhausted_rejects(
                [d.row for d in last_chance], limit)])
        offsets = [d.offset for d in deliveries]
        if not self._commit(readings, offsets, rejects, deliveries, stop):
            rollback_stages(self.stages)
            return 0  # stopping while the store is down: leave them unacknowledged
        self.queue.ack(deliveries)
        self.stats.messages += len(deliveries)
        return len(deliveries)

    def _process(self, rows: list[Row]) -> tuple[pa.Table, pa.Table]:
        """(readings with log_offset, rejects with raw bytes and log_offset)."""
        empty_rejects = QUARANTINE_SCHEMA.append(pa.field("log_offset", pa.int64()))
        if not rows:
            return HOT_SCHEMA.empty_table(), empty_rejects.empty_table()
        entries = LogBatch(build_batch(rows).table)
        ctx = self.context()
        if self._on_unknown_devices is not None and self.settings.ingest.auto_register:
            ctx = self._register_unknown(entries, ctx)
        batch: Batch = run_isolating(entries, self.stages, ctx, self.stats)
        table = entries.table
        offsets = table.column("offset").take(
            pc.index_in(batch.readings.column("msg_id"), value_set=table.column("msg_id")))
        readings = batch.readings.append_column("log_offset", offsets) \
            .select(HOT_SCHEMA.names).cast(HOT_SCHEMA)
        rejects = quarantine_rows(batch.rejects, table)
        reject_offsets = table.column("offset").take(
            pc.index_in(rejects.column("msg_id"), value_set=table.column("msg_id")))
        self.stats.readings += readings.num_rows
        self.stats.rejects += rejects.num_rows
        return readings, rejects.append_column("log_offset", reject_offsets)

    def _commit(self, readings: pa.Table, offsets: list[int], rejects: pa.Table,
                deliveries: list[Delivery], stop: threading.Event) -> bool:
        backoff, keepalive = 0.2, time.monotonic()
        while True:
            try:
                stored, _ = self.hot.commit_batch(readings, offsets, rejects)
            except TransientError as exc:
                self._note_error(exc)
                if stop.is_set():
                    return False
                if time.monotonic() - keepalive > self.settings.jetstream.ack_wait_seconds / 3:
                    self.queue.in_progress(deliveries)
                    keepalive = time.monotonic()
                stop.wait(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            self.waiting_since = None
            commit_stages(self.stages)
            self.stats.stored += stored
            self.stats.last_hot_commit = datetime.now(UTC)
            return True

    def _quarantine_exhausted(self, stop: threading.Event) -> None:
        """Messages whose last delivery died with its worker (MAX_DELIVERIES advisory)."""
        offsets = self.queue.take_exhausted()
        rows = [row for o in offsets if (row := self.queue.get(o)) is not None]
        if rows:
            rejects = exhausted_rejects(rows, self.settings.jetstream.max_deliver)
            self._commit(HOT_SCHEMA.empty_table(), [r[0] for r in rows], rejects, [], stop)

    def _note_error(self, exc: Exception) -> None:
        if self.waiting_since is None:
            self.waiting_since = time.monotonic()
        self.stats.errors += 1
        self.stats.last_error = str(exc)
        log.warning("worker: %s (will retry)", exc)

    def run(self, stop: threading.Event, max_batches: int | None = None) -> None:
        """Loop until `stop` is set; the batch in hand is finished (committed and acked)
        before returning."""
        batches, backoff = 0, 0.2
        while not stop.is_set():
            try:
                if self.step(stop):
                    batches += 1
                backoff = 0.2
            except TransientError as exc:  # NATS unreachable: wait and fetch again
                rollback_stages(self.stages)
                self._note_error(exc)
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            if max_batches is not None and batches >= max_batches:
                break
