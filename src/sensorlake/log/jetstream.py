"""JetStreamLog: the Log protocol on a NATS JetStream stream (the server profile).

Offsets are stream sequences. `submit` publishes every envelope of a request concurrently
(up to jetstream.max_in_flight PubAcks outstanding) and resolves once every PubAck arrived:
a PubAck means the stream stored the message (on 2.9 written to the OS and fsynced within
60 s; see docs/server.md). A publish that times out or loses its connection is retried with
the same `Nats-Msg-Id` until jetstream.publish_retry_seconds, so a retry after a server
restart is answered as a duplicate instead of stored twice. A full stream (`discard: new`)
refuses the publish: the log first purges what every consumer acknowledged, then raises
Backpressure (HTTP 503); it never deletes an unacknowledged message.

Consumer positions and claims (`claim`, `ack`, `position`, `replay`) and the per-device seq
watermarks live in two KV buckets next to the stream (`<stream>_consumers`,
`<stream>_marks`), updated with compare-and-set so several ingest processes agree. The
server workers do not use them: they share the durable pull consumer of
`log/jetstream_consumer.py`; the lake exporter acknowledges its exported spans here, which
is what lets the log purge.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import nats
import orjson
from nats.aio.msg import Msg
from nats.js import api
from nats.js.errors import BucketNotFoundError, KeyDeletedError, KeyNotFoundError
from nats.js.kv import KeyValue

from sensorlake.config import JetStreamSettings
from sensorlake.errors import Backpressure, ConfigError, NotFound
from sensorlake.log.base import AppendResult, Envelope, LogBatch, LogStats, Span
from sensorlake.log.jetstream_core import (
    NatsUnavailable,
    bucket_keys,
    connect,
    headers_of,
    is_full,
    is_transient,
    key_token,
    msg_row,
    open_runner,
    row_of,
    stream_config,
    subject_token,
)
from sensorlake.log.jetstream_marks import Watermarks
from sensorlake.log.memory import (
    Consumer,
    LogClosed,
    Row,
    build_batch,
    describe_missing,
    now_us,
    take_rows,
)

FETCH_CHUNK = 10_000
MIN_BYTES = 1 << 20


class JetStreamLog:
    """The Log protocol on one JetStream stream; thread-safe (one asyncio thread inside)."""

    def __init__(self, settings: JetStreamSettings, max_bytes: int = 1 << 30,
                 keep_acked_seconds: float = 3600, name: str = "sensorlake") -> None:
        self.settings, self.max_bytes = settings, max_bytes
        self.keep_acked_seconds = keep_acked_seconds
        self.commits = 0
        """Appends completed (each submit counts once)."""
        if max_bytes < MIN_BYTES:
            raise ConfigError(f"log.max_bytes {max_bytes} is too small for a JetStream stream: "
                              f"use at least {MIN_BYTES} (NATS 2.9's file store drops old "
                              "messages under tiny limits even with discard: new)")
        self._closed = False
        self._submitted: set[Future[AppendResult]] = set()
        self._submitted_lock = threading.Lock()
        self._runner = open_runner(name, lambda: self._open(name))

    async def _open(self, name: str) -> None:
        cfg = self.settings
        self.nc = await connect(cfg.servers, name)
        self.js = self.nc.jetstream(timeout=cfg.publish_timeout_seconds)
        self._in_flight = asyncio.Semaphore(cfg.max_in_flight)
        self._pending: dict[str, asyncio.Future[api.PubAck]] = {}
        self._token = 0
        self._reply_prefix = self.nc.new_inbox() + "."
        await self.nc.subscribe(self._reply_prefix + "*", cb=self._on_pub_ack)
        config = stream_config(cfg, self.max_bytes)
        try:
            info = await self.js.stream_info(cfg.stream)
            if (info.config.max_bytes, info.config.duplicate_window) != (
                    config.max_bytes, config.duplicate_window):
                await self.js.update_stream(config)
        except nats.js.errors.NotFoundError:
            await self.js.add_stream(config)
        self._consumers = await self._bucket(f"{cfg.stream}_consumers")
        self._marks = Watermarks(await self._bucket(f"{cfg.stream}_marks"), cfg)

    async def _bucket(self, bucket: str) -> KeyValue:
        try:
            return await self.js.key_value(bucket)
        except BucketNotFoundError:
            return await self.js.create_key_value(api.KeyValueConfig(
                bucket=bucket, history=1, storage=api.StorageType.FILE,
                replicas=self.settings.replicas))

    def _call(self, coro: Any, timeout: float | None = None) -> Any:
        if self._closed:
            coro.close()
            raise LogClosed(f"JetStream log {self.settings.stream} is closed")
        return self._runner.call(coro, timeout or self.settings.publish_timeout_seconds * 4)

    # -- append ------------------------------------------------------------------------------

    HEADER_ROOM = 2048
    """Bytes kept for the headers of a message (ids, tenant, device, source, codec, seq)."""

    @property
    def max_message_bytes(self) -> int | None:
        """The largest payload NATS accepts in one message (its max_payload, less headers)."""
        nc = getattr(self, "nc", None)
        if nc is None or not getattr(nc, "max_payload", 0):
            return None
        return int(nc.max_payload) - self.HEADER_ROOM

    def submit(self, envelopes: Sequence[Envelope]) -> Future[AppendResult]:
        if self._closed:
            raise LogClosed(f"JetStream log {self.settings.stream} is closed")
        if not envelopes:
            done: Future[AppendResult] = Future()
            done.set_result(AppendResult())
            return done
        future = self._runner.submit(self._append(list(envelopes)))
        with self._submitted_lock:
            self._submitted.add(future)
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: Future[AppendResult]) -> None:
        with self._submitted_lock:
            self._submitted.discard(future)

    def append(self, envelopes: Sequence[Envelope]) -> AppendResult:
        return self.submit(envelopes).result()

    def submit_many(self, groups: Sequence[Sequence[Envelope]],
                    ) -> Future[list[AppendResult | BaseException]]:
        """Several independent appends published together; one outcome per group."""
        if self._closed:
            raise LogClosed(f"JetStream log {self.settings.stream} is closed")
        future = self._runner.submit(self._append_groups([list(g) for g in groups]))
        with self._submitted_lock:
            self._submitted.add(future)  # type: ignore[arg-type]
        future.add_done_callback(self._forget)  # type: ignore[arg-type]
        return future

    async def _append(self, envelopes: list[Envelope]) -> AppendResult:
        [outcome] = await self._append_groups([envelopes])
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def _append_groups(self, groups: list[list[Envelope]],
                             ) -> list[AppendResult | BaseException]:
        """Publish the first occurrence of every msg_id (in group order) concurrently; a
        later occurrence is a duplicate. A group fails alone if one of its own publishes
        failed (Backpressure when the stream is full)."""
        first: dict[str, Envelope] = {}
        for group in groups:
            for e in group:
                first.setdefault(e.msg_id, e)
        unique = list(first.values())
        outcomes = dict(zip((e.msg_id for e in unique), await self._publish_all(unique),
                            strict=True))
        owner: dict[str, int] = {}
        results: list[AppendResult | BaseException] = []
        for index, group in enumerate(groups):
            failure = next((o for e in group if isinstance(o := outcomes[e.msg_id],
                                                           BaseException)), None)
            if failure is not None:
                results.append(failure)
                continue
            fresh = 0
            for e in group:
                ack = outcomes[e.msg_id]
                if owner.setdefault(e.msg_id, index) == index and not ack.duplicate \
                        and first[e.msg_id] is e:  # type: ignore[union-attr]
                    fresh += 1
            try:
                marks = await self._marks.advance(group)
            except Exception as exc:
                results.append(exc)
                continue
            results.append(AppendResult(fresh, len(group) - fresh, marks))
        self.commits += 1
        return results

    async def _publish_all(self, envelopes: list[Envelope]) -> list[api.PubAck | BaseException]:
        """Publish concurrently; retry what failed transiently (same msg id) until the
        deadline; when the stream is full, make room once, then report Backpressure."""
        cfg = self.settings
        deadline = time.monotonic() + cfg.publish_retry_seconds
        acks: list[api.PubAck | BaseException | None] = [None] * len(envelopes)
        todo = list(range(len(envelopes)))
        purged, delay = False, 0.1
        while todo:
            results = await asyncio.gather(*(self._publish(envelopes[i]) for i in todo),
                                           return_exceptions=True)
            retry: list[int] = []
            full: list[int] = []
            for i, result in zip(todo, results, strict=True):
                if isinstance(result, api.PubAck):
                    acks[i] = result
                elif is_full(result):
                    full.append(i)
                elif is_transient(result):
                    retry.append(i)
                else:
                    acks[i] = result
            if full:
                if not purged and await self._make_room():
                    retry += full
                else:
                    for i in full:
                        acks[i] = Backpressure(
                            f"the JetStream stream {cfg.stream} is full ({self.max_bytes} "
                            "bytes, discard: new); workers are behind - wait, or raise "
                            "log.max_bytes", retry_after=1.0)
                purged = True
            todo = sorted(retry)
            if not todo:
                break
            if time.monotonic() > deadline:
                for i in todo:
                    acks[i] = NatsUnavailable(
                        f"NATS did not confirm {len(todo)} of {len(envelopes)} messages "
                        f"within {cfg.publish_retry_seconds:g} s; retry the request")
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        return [a for a in acks if a is not None]

    async def _publish(self, e: Envelope) -> api.PubAck:
        subject = (f"{self.settings.subject_prefix}.{subject_token(e.tenant)}."
                   f"{subject_token(e.device_id)}")
        async with self._in_flight:
            self._token += 1
            token = str(self._token)
            future: asyncio.Future[api.PubAck] = asyncio.get_running_loop().create_future()
            self._pending[token] = future
            try:
                await self.nc.publish(subject, e.payload, reply=self._reply_prefix + token,
                                      headers=headers_of(e))
                return await asyncio.wait_for(future, self.settings.publish_timeout_seconds)
            finally:
                self._pending.pop(token, None)

    async def _on_pub_ack(self, msg: Msg) -> None:
        """Resolve the publish waiting for this PubAck (or its error). nats-py's own
        publish_async leaves a future unresolved when the stream answers with an error
        (a full stream), so the replies are matched here."""
        future = self._pending.pop(msg.subject[len(self._reply_prefix):], None)
        if future is None or future.done():
            return
        if msg.headers and msg.headers.get("Status") == "503":
            future.set_exception(nats.js.errors.NoStreamResponseError())
            return
        try:
            resp = orjson.loads(msg.data)
        except orjson.JSONDecodeError as exc:
            future.set_exception(exc)
            return
        if "error" in resp:
            err = resp["error"]
            future.set_exception(nats.js.errors.APIError(
                code=err.get("code"), description=err.get("description"),
                err_code=err.get("err_code")))
        else:
            future.set_result(api.PubAck.from_response(resp))

    # -- watermarks --------------------------------------------------------------------------

    def watermarks(self, tenant: str, devices: Sequence[str]) -> dict[str, int]:
        return dict(self._call(self._marks.watermarks(tenant, devices)))

    # -- reading -----------------------------------------------------------------------------

    async def _fetch(self, start: int, count: int, max_bytes: int, wait: float,
                     stop: int | None = None) -> list[Row]:
        """Up to `count` rows from offset `start` on (through an ephemeral consumer)."""
        info = await self.js.stream_info(self.settings.stream)
        start = max(start, info.state.first_seq)
        last = info.state.last_seq if stop is None else min(stop, info.state.last_seq)
        if start > last and (wait <= 0 or stop is not None):
            return []
        sub = await self.js.pull_subscribe(
            f"{self.settings.subject_prefix}.>", stream=self.settings.stream,
            config=api.ConsumerConfig(
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start,
                ack_policy=api.AckPolicy.NONE, inactive_threshold=30.0, mem_storage=True,
                num_replicas=1))
        rows: list[Row] = []
        size = 0
        try:
            timeout = max(wait, 0.5) if start > last else 5.0
            while len(rows) < count:
                want = min(count - len(rows), FETCH_CHUNK)
                try:
                    msgs = await sub.fetch(want, timeout=timeout)
                except (TimeoutError, nats.errors.TimeoutError):
                    break
                for msg in msgs:
                    row = msg_row(msg)
                    if stop is not None and row[0] > stop:
                        return rows
                    size += len(row[8])
                    if rows and size > max_bytes:
                        return rows
                    rows.append(row)
                last_seen = rows[-1][0] if rows else start - 1
                if len(msgs) < want or last_seen >= (stop or last):
                    break
                timeout = 5.0
        finally:
            await sub.unsubscribe()
            with contextlib.suppress(Exception):
                await self.js.delete_consumer(self.settings.stream, sub._consumer)
        return rows

    def read(self, after: int, max_messages: int = 5000, max_bytes: int = 16 << 20,
             wait: float = 0.0) -> LogBatch:
        rows = self._call(self._fetch(after + 1, max_messages, max_bytes, wait),
                          timeout=wait + 60)
        return build_batch(take_rows(rows, max_messages, max_bytes))

    def read_span(self, span: Span) -> LogBatch:
        rows = self._call(self._fetch(span.first, span.count, 1 << 62, 0, span.last),
                          timeout=120)
        if len(rows) != span.count:
            missing = describe_missing(span.first, span.last, (r[0] for r in rows))
            raise NotFound(f"log offsets {missing} are not retained "
                           "(purged after acknowledgement, or never appended)")
        return build_batch(rows)

    async def _received_at(self, offset: int) -> int | None:
        try:
            raw = await self.js.get_msg(self.settings.stream, seq=offset, next=True)
        except nats.js.errors.NotFoundError:
            return None
        return row_of(raw.seq or offset, raw.headers, raw.data or b"")[6]

    # -- consumers ---------------------------------------------------------------------------

    async def _get_consumer(self, name: str) -> tuple[Consumer, int | None]:
        try:
            entry = await self._consumers.get(key_token(name))
        except KeyNotFoundError:
            return Consumer(), None
        state = orjson.loads(entry.value or b"{}")
        claim = state.get("claim")
        return Consumer(int(state.get("acked", 0)), Span(*claim) if claim else None), \
            entry.revision

    async def _put_consumer(self, name: str, consumer: Consumer) -> None:
        claim = [consumer.claim.first, consumer.claim.last] if consumer.claim else None
        await self._consumers.put(key_token(name), orjson.dumps(
            {"name": name, "acked": consumer.acked, "claim": claim, "at": now_us()}))

    async def _all_consumers(self) -> dict[str, int]:
        out = {}
        for key in await bucket_keys(self.js, f"{self.settings.stream}_consumers"):
            with contextlib.suppress(KeyNotFoundError, KeyDeletedError):  # gone since listed
                state = orjson.loads((await self._consumers.get(key)).value or b"{}")
                out[str(state.get("name", key))] = int(state.get("acked", 0))
        return out

    def claim(self, consumer: str, span: Span) -> None:
        async def work() -> None:
            current, _ = await self._get_consumer(consumer)
            await self._put_consumer(consumer, Consumer(current.acked, span))
        self._call(work())

    def claimed(self, consumer: str) -> Span | None:
        return self._call(self._get_consumer(consumer))[0].claim

    def position(self, consumer: str) -> int:
        return int(self._call(self._get_consumer(consumer))[0].acked)

    def ack(self, consumer: str, span: Span) -> None:
        async def work() -> None:
            info = await self.js.stream_info(self.settings.stream)
            if span.last > info.state.last_seq:
                raise ValueError(f"cannot acknowledge {span.first}..{span.last}: the log ends "
                                 f"at offset {info.state.last_seq}")
            current, _ = await self._get_consumer(consumer)
            acked = max(current.acked, span.last)
            await self._put_consumer(consumer, Consumer(acked))
            await self._prune(known={consumer: acked})
        self._call(work())

    def replay(self, consumer: str, from_offset: int) -> None:
        async def work() -> None:
            state = (await self.js.stream_info(self.settings.stream)).state
            first, last = state.first_seq, state.last_seq
            if from_offset < 1 or from_offset > last + 1:
                raise ValueError(f"cannot replay {consumer!r} from offset {from_offset}: "
                                 f"offsets run from 1 to {last}")
            if from_offset < first and state.messages:
                raise NotFound(f"cannot replay {consumer!r} from offset {from_offset}: the log "
                               f"retains offsets {first}..{last}; older ones were purged after "
                               "acknowledgement (log.keep_acked_seconds)")
            if not state.messages and from_offset <= last:
                raise NotFound(f"cannot replay {consumer!r} from offset {from_offset}: the log "
                               "retains no envelopes; older ones were purged after "
                               "acknowledgement (log.keep_acked_seconds)")
            await self._put_consumer(consumer, Consumer(from_offset - 1))
        self._call(work())

    # -- pruning -----------------------------------------------------------------------------

    async def _prune(self, ignore_age: bool = False, known: dict[str, int] | None = None) -> int:
        """Purge what every consumer acknowledged and received more than keep_acked_seconds
        ago (everything acknowledged when `ignore_age`); returns messages purged.

        `known` holds positions just written: the KV's key listing and direct gets can lag
        a put by a moment, so the writer's own value is taken from memory."""
        floor = min(((await self._all_consumers()) | (known or {})).values(), default=0)
        state = (await self.js.stream_info(self.settings.stream)).state
        first = state.first_seq
        floor = min(floor, state.last_seq)
        if not state.messages or floor < first:
            return 0
        upto = floor
        if not ignore_age and self.keep_acked_seconds > 0:
            cutoff = now_us() - int(self.keep_acked_seconds * 1_000_000)
            lo, hi, upto = first, floor, first - 1  # binary search: last received < cutoff
            while lo <= hi:
                mid = (lo + hi) // 2
                received = await self._received_at(mid)
                if received is not None and received < cutoff:
                    upto, lo = mid, mid + 1
                else:
                    hi = mid - 1
        if upto < first:
            return 0
        await self.js.purge_stream(self.settings.stream, seq=upto + 1)
        return upto - first + 1

    async def _make_room(self) -> bool:
        return await self._prune(ignore_age=True) > 0

    def prune(self) -> int:
        """Purge acknowledged messages older than keep_acked_seconds; returns how many."""
        return int(self._call(self._prune()))

    def stats(self) -> LogStats:
        async def work() -> LogStats:
            state = (await self.js.stream_info(self.settings.stream)).state
            acked = await self._all_consumers()
            floor = min(acked.values(), default=0)
            oldest = None
            if state.last_seq > floor and state.messages:
                oldest = await self._received_at(max(floor + 1, state.first_seq))
            first = state.first_seq if state.messages else 0
            return LogStats(first, state.last_seq, state.bytes, self.max_bytes, acked, oldest)
        return self._call(work())

    def close(self) -> None:
        """Let pending appends finish (or time out), then disconnect (idempotent)."""
        if self._closed:
            return
        self._closed = True
        with self._submitted_lock:
            pending = list(self._submitted)
        concurrent.futures.wait(pending, timeout=self.settings.publish_retry_seconds + 5)
        with contextlib.suppress(Exception):
            self._runner.call(self.nc.close(), timeout=5)
        self._runner.close()

    def __enter__(self) -> JetStreamLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

