"""Per-device seq watermarks of the JetStream log, in the `<stream>_marks` KV bucket.

A device's entry holds its watermark (the highest seq up to which every seq is in the
stream) and the seqs seen above it. Each ingest process folds the seqs it appended into the
entry with compare-and-set, re-reading and merging on a conflict, so several ingest processes
sharing a subscription agree on one watermark.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import nats
import orjson
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from sensorlake.config import JetStreamSettings
from sensorlake.log.base import Envelope
from sensorlake.log.jetstream_core import NatsUnavailable, is_transient, key_token
from sensorlake.log.memory import SeqStage, SeqTracker


class Watermarks:
    """The watermarks of one stream; used from the log's asyncio thread only."""

    def __init__(self, kv: KeyValue, settings: JetStreamSettings) -> None:
        self._kv, self.settings = kv, settings
        self._seqs = SeqTracker()
        self._revisions: dict[tuple[str, str], int | None] = {}
        self._lock = asyncio.Lock()

    async def advance(self, envelopes: Sequence[Envelope]) -> dict[tuple[str, str], int]:
        """Fold the seqs of `envelopes` into their devices' watermarks (stored with
        compare-and-set); the current watermark of every device among them."""
        keys = {(e.tenant, e.device_id) for e in envelopes}
        with_seq = [e for e in envelopes if e.seq is not None]
        async with self._lock:
            for key in {(e.tenant, e.device_id) for e in with_seq}:
                seqs = [e.seq for e in with_seq if (e.tenant, e.device_id) == key]
                await self._store_mark(key, seqs)  # type: ignore[arg-type]
            for key in keys - {(e.tenant, e.device_id) for e in with_seq}:
                if key not in self._revisions:
                    await self._load_mark(key)
            return {k: m for k in keys if (m := self._seqs.marks.get(k)) is not None}

    async def _load_mark(self, key: tuple[str, str]) -> None:
        try:
            entry = await self._kv.get(key_token(*key))
        except KeyNotFoundError:
            self._revisions[key] = None
            return
        state = orjson.loads(entry.value or b"{}")
        self._seqs.marks[key] = int(state.get("m", 0))
        self._seqs.pending[key] = set(state.get("p", []))
        self._revisions[key] = entry.revision

    async def _store_mark(self, key: tuple[str, str], seqs: list[int]) -> None:
        """Fold `seqs` into the device's watermark and write it with compare-and-set; on a
        conflict (another ingest process moved it) re-read, merge and try again; while NATS
        elects a leader or reconnects, retry until jetstream.publish_retry_seconds."""
        deadline = time.monotonic() + self.settings.publish_retry_seconds
        delay = 0.05
        while True:
            try:
                if key not in self._revisions:
                    await self._load_mark(key)
                stage = SeqStage(self._seqs)
                for seq in seqs:
                    stage.add(key, seq)
                value = orjson.dumps({"m": stage.marks[key], "p": sorted(stage.pending[key])})
                revision = self._revisions.get(key)
                if revision is None:
                    new = await self._kv.create(key_token(*key), value)
                else:
                    new = await self._kv.update(key_token(*key), value, last=revision)
                stage.apply()
                self._revisions[key] = new
                return
            except Exception as exc:
                conflict = isinstance(exc, KeyWrongLastSequenceError) or (
                    isinstance(exc, nats.js.errors.APIError) and not is_transient(exc))
                if not conflict and not is_transient(exc):
                    raise
                self._revisions.pop(key, None)  # re-read before the next attempt
                if time.monotonic() > deadline:
                    raise NatsUnavailable(f"could not update the watermark of {key[1]} "
                                          f"({exc!r}); retry the request") from exc
                await asyncio.sleep(0 if conflict else delay)
                delay = min(delay * 2, 1.0)

    async def watermarks(self, tenant: str, devices: Sequence[str]) -> dict[str, int]:
        """The stored watermark of each of `devices` that has one (read fresh)."""
        async with self._lock:
            for device in devices:
                await self._load_mark((tenant, device))
            return {d: m for d in devices
                    if (m := self._seqs.marks.get((tenant, d))) is not None}
