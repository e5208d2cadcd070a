"""The worker's work in flight: the span stored in the hot store but not yet in the lake, a
batch whose hot-store commit runs in the background, and the threads that run those."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa

from sensorlake.log.base import LogBatch, Span
from sensorlake.process.base import Batch

RAW_KEEP_BYTES = 96 << 20
"""The log entries of the pending span are kept in memory for the lake's raw/ file up to
this many bytes; past it the flush reads the span back from the log instead."""


@dataclass
class PendingSpan:
    """The span processed into the hot store but not yet into the lake, with its log
    entries while they fit in RAW_KEEP_BYTES (None: read them back at the flush)."""

    first: int | None = None
    last: int = 0
    rows: int = 0
    since: float = field(default_factory=time.monotonic)
    entries: list[pa.Table] | None = field(default_factory=list)
    entry_bytes: int = 0

    def keep(self, table: pa.Table) -> None:
        if self.entries is None:
            return
        self.entry_bytes += table.nbytes
        if self.entry_bytes > RAW_KEEP_BYTES:
            self.entries = None
        else:
            self.entries.append(table)

    def raw(self) -> pa.Table | None:
        """The span's log entries, exactly as `log.read_span` would return them."""
        if not self.entries:
            return None
        return pa.concat_tables(self.entries)


class InThread:
    """One call on its own thread: a lake flush (Parquet encoding releases the GIL, so the
    worker's next batches overlap with it on the other core), or a batch's hot-store write
    (DuckDB releases the GIL, so the next batch's stages overlap with it)."""

    def __init__(self, name: str, work: Callable[[], None]) -> None:
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(work,), daemon=True,
                                        name=name)
        self._thread.start()

    def _run(self, work: Callable[[], None]) -> None:
        try:
            work()
        except BaseException as exc:  # handed to the worker thread, which raises it
            self.error = exc

    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self) -> None:
        self._thread.join()


class LakeFlush(InThread):
    def __init__(self, span: Span, write: Callable[[Span], None]) -> None:
        self.span = span
        super().__init__("sensorlake-lake", lambda: write(span))


@dataclass
class ComputedBatch:
    """A batch whose stages ran, with its hot-store write (in flight or done)."""

    entries: LogBatch
    batch: Batch
    readings: pa.Table
    write: InThread | None = None
    stored: int = 0
    """Rows the hot store added (set by the write)."""
    hot_seconds: float = 0.0
    quarantine_seconds: float = 0.0
