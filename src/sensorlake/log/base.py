"""The Log protocol: append raw envelopes durably, read them in batches, acknowledge spans.

Offsets are positive integers that grow by one per appended envelope (1, 2, 3, ...).
A consumer's position is the highest offset it acknowledged; everything at or below it is
done. Between read and ack, a consumer may *claim* a span: a durable note that this exact
range will be written to the lake as one unit, so that after a crash the same span (and so
the same lake file names) is produced again. Ack clears the claim.

Invariants every backend keeps (tests/contract/test_log_contract.py checks them):
- `append` returns (or its future resolves) only after the envelopes are durable.
- Appending a msg_id that the log already holds is a no-op (counted as a duplicate).
- Over the configured size, `append` raises Backpressure; the log never deletes an
  unacknowledged envelope to make room.
- Per (tenant, device) it keeps the watermark: the highest seq s such that every seq from
  1 to s has been appended. Envelopes without a seq do not move it.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, runtime_checkable

import pyarrow as pa
import pyarrow.compute as pc

from sensorlake.model import TS_TYPE

LOG_ENTRY_SCHEMA = pa.schema(
    [
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("msg_id", pa.string(), nullable=False),
        pa.field("tenant", pa.string(), nullable=False),
        pa.field("device_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("codec", pa.string(), nullable=False),
        pa.field("received_at", TS_TYPE, nullable=False),
        pa.field("seq", pa.int64()),
        pa.field("payload", pa.binary(), nullable=False),
    ]
)
"""Columns of a LogBatch table; also the schema of the lake's `raw/` files."""


class Envelope(NamedTuple):
    """Raw input exactly as received, with where it came from. Ingest never decodes further.

    A named tuple: ingest builds one per message on its hot path, and a tuple is the cheapest
    immutable record Python has."""

    msg_id: str
    """Idempotency key: the same msg_id appended twice is stored once."""
    tenant: str
    """Taken from the authenticated credential, never from the payload."""
    device_id: str
    source: str
    """Where it came from, e.g. `http` or `mqtt:sensorlake/aq-1/up`."""
    codec: str
    """Name of the decoder the worker applies, e.g. `envelope`."""
    payload: bytes
    received_at_us: int
    """When ingest received it, microseconds since the Unix epoch (UTC)."""
    seq: int | None = None
    """The device's own sequence number, when it sends one (edge agent)."""


@dataclass(frozen=True)
class Span:
    """An inclusive range of log offsets."""

    first: int
    last: int

    def __post_init__(self) -> None:
        if self.first < 1 or self.last < self.first:
            raise ValueError(f"invalid span {self.first}..{self.last}")

    @property
    def count(self) -> int:
        return self.last - self.first + 1


@dataclass
class AppendResult:
    """What an append did."""

    accepted: int = 0
    """Envelopes newly written."""
    duplicates: int = 0
    """Envelopes whose msg_id the log already held (no-op)."""
    watermarks: dict[tuple[str, str], int] = field(default_factory=dict)
    """(tenant, device_id) -> highest contiguous seq stored, for devices in this append."""


@dataclass
class LogBatch:
    """Envelopes read from the log. `table` has LOG_ENTRY_SCHEMA, ordered by offset."""

    table: pa.Table

    @property
    def span(self) -> Span | None:
        if self.table.num_rows == 0:
            return None
        offsets = self.table.column("offset")
        return Span(offsets[0].as_py(), offsets[-1].as_py())

    def __len__(self) -> int:
        return self.table.num_rows

    def payload_bytes(self) -> int:
        """The payloads' total size (what `worker.batch_bytes` bounds)."""
        if self.table.num_rows == 0:
            return 0
        return int(pc.sum(pc.binary_length(self.table.column("payload"))).as_py())


@dataclass
class LogStats:
    """A snapshot for status and backpressure decisions."""

    first_offset: int
    """Lowest offset still retained (0 when empty)."""
    last_offset: int
    """Highest offset ever appended (0 when empty)."""
    stored_bytes: int
    """Payload bytes retained, acknowledged or not."""
    max_bytes: int
    acked: dict[str, int] = field(default_factory=dict)
    """consumer -> acknowledged offset."""
    oldest_unacked_us: int | None = None
    """received_at of the oldest envelope not yet acknowledged by every consumer."""


@runtime_checkable
class Log(Protocol):
    """The durable queue between ingest and workers."""

    def submit(self, envelopes: Sequence[Envelope]) -> Future[AppendResult]:
        """Queue an append; the future resolves once durable (group commit) or fails with
        Backpressure. Safe to call from any thread."""
        ...

    def submit_many(self, groups: Sequence[Sequence[Envelope]],
                    ) -> Future[list[AppendResult | BaseException]]:
        """Queue several independent appends at once (e.g. the requests of one event-loop
        turn); the future resolves once all are durable, to one outcome per group in order:
        its AppendResult, or the exception (Backpressure) that refused that group alone."""
        ...

    def append(self, envelopes: Sequence[Envelope]) -> AppendResult:
        """Append and wait until durable."""
        ...

    def read(self, after: int, max_messages: int = 5000, max_bytes: int = 16 << 20,
             wait: float = 0.0) -> LogBatch:
        """Envelopes with offset > after, oldest first; waits up to `wait` seconds for one."""
        ...

    def read_span(self, span: Span) -> LogBatch:
        """Exactly the envelopes of `span` (all must still be retained)."""
        ...

    def claim(self, consumer: str, span: Span) -> None:
        """Durably note that `consumer` is writing `span` as one unit."""
        ...

    def claimed(self, consumer: str) -> Span | None:
        """The claimed span not yet acknowledged, if any (restart resumes it)."""
        ...

    def ack(self, consumer: str, span: Span) -> None:
        """Durably mark everything up to span.last as done for `consumer`; clears its claim."""
        ...

    def position(self, consumer: str) -> int:
        """The highest offset `consumer` acknowledged (0 if none)."""
        ...

    def replay(self, consumer: str, from_offset: int) -> None:
        """Move `consumer` back so it re-reads retained envelopes from `from_offset` on."""
        ...

    def watermarks(self, tenant: str, devices: Sequence[str]) -> dict[str, int]:
        """device_id -> highest contiguous seq stored, for devices that sent a seq."""
        ...

    def stats(self) -> LogStats:
        ...

    def close(self) -> None:
        """Finish pending appends and release files."""
        ...
