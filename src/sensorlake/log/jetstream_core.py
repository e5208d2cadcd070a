"""What the JetStream log and the worker consumer share: the asyncio thread, subjects,
headers, the stream's configuration and turning messages into log rows.

One message per envelope: subject `<prefix>.<tenant>.<device>` (tokens percent-encoded so
that `.`, `*`, `>` and spaces cannot split or widen a subject), the raw payload as the body,
and the envelope's fields as headers; `Nats-Msg-Id` is the msg_id, so the stream stores a
message id once within its duplicate window. The stream sequence is the log offset.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import logging
import re
import threading
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar
from urllib.parse import quote, unquote

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import api
from nats.js.client import KV_PRE_TEMPLATE, KV_STREAM_TEMPLATE

from sensorlake.config import JetStreamSettings
from sensorlake.errors import TransientError
from sensorlake.log.base import Envelope
from sensorlake.log.memory import Row

log = logging.getLogger(__name__)
T = TypeVar("T")

H_TENANT, H_DEVICE, H_SOURCE = "Slk-Tenant", "Slk-Device", "Slk-Source"
H_CODEC, H_RECEIVED, H_SEQ = "Slk-Codec", "Slk-Received", "Slk-Seq"
MSG_ID = api.Header.MSG_ID
UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")


class NatsUnavailable(TransientError):
    """NATS cannot be reached or did not answer in time; retry (same msg ids)."""


def subject_token(value: str) -> str:
    """`value` as one subject token: anything but [A-Za-z0-9_-] percent-encoded."""
    if not value:
        return "_"
    return UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), value)


def key_token(*parts: str) -> str:
    """A KV key for `parts` (urlsafe base64, valid in every KV key)."""
    return base64.urlsafe_b64encode("\0".join(parts).encode()).decode().rstrip("=") or "_"


def header_value(value: str) -> str:
    return quote(value, safe="/:@._-+=,;!~*'()")


def headers_of(e: Envelope) -> dict[str, str]:
    headers = {MSG_ID: header_value(e.msg_id), H_TENANT: header_value(e.tenant),
               H_DEVICE: header_value(e.device_id), H_SOURCE: header_value(e.source),
               H_CODEC: header_value(e.codec), H_RECEIVED: str(e.received_at_us)}
    if e.seq is not None:
        headers[H_SEQ] = str(e.seq)
    return headers


def row_of(offset: int, headers: dict[str, str] | None, payload: bytes) -> Row:
    """A log row (LOG_ENTRY_SCHEMA order) from a stored message."""
    h = headers or {}
    seq = h.get(H_SEQ)
    return (offset, unquote(h.get(MSG_ID, "")), unquote(h.get(H_TENANT, "")),
            unquote(h.get(H_DEVICE, "")), unquote(h.get(H_SOURCE, "")),
            unquote(h.get(H_CODEC, "envelope")), int(h.get(H_RECEIVED, "0")),
            int(seq) if seq else None, payload)


def msg_row(msg: Msg) -> Row:
    return row_of(msg.metadata.sequence.stream, msg.headers, msg.data)


def stream_config(cfg: JetStreamSettings, max_bytes: int) -> api.StreamConfig:
    """File storage, limits retention, `discard: new` at `max_bytes`: a full stream refuses
    publishes (backpressure) and never deletes a message to make room."""
    return api.StreamConfig(
        name=cfg.stream, subjects=[f"{cfg.subject_prefix}.>"], storage=api.StorageType.FILE,
        retention=api.RetentionPolicy.LIMITS, discard=api.DiscardPolicy.NEW,
        max_bytes=max_bytes, max_msgs=-1, max_age=0, num_replicas=cfg.replicas,
        duplicate_window=cfg.duplicate_window_seconds, allow_direct=True)


def is_full(exc: BaseException) -> bool:
    """The stream refused a publish because it is at its byte (or message) limit."""
    text = str(getattr(exc, "description", "") or exc).lower()
    return "maximum bytes" in text or "maximum messages" in text or "resource limits" in text


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: a timeout, a lost connection, no responders while a server restarts."""
    return (isinstance(exc, asyncio.TimeoutError | TimeoutError | ConnectionError | OSError
                      | nats.errors.Error) and not isinstance(exc, nats.js.errors.APIError)) \
        or isinstance(exc, nats.js.errors.ServiceUnavailableError
                      | nats.js.errors.NoStreamResponseError)


class AsyncRunner:
    """An asyncio loop in a daemon thread; blocking callers hand it coroutines."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            raise NatsUnavailable(f"NATS did not answer within {timeout} s") from exc

    def close(self) -> None:
        async def cancel_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self.loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(cancel_rest(), self.loop).result(5)
            self.loop.call_soon_threadsafe(self.loop.stop)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        if not self.loop.is_running():
            self.loop.close()


def open_runner(name: str, opener: Callable[[], Coroutine[Any, Any, None]]) -> AsyncRunner:
    """A new AsyncRunner that has run `opener()` (connect, look up streams and buckets);
    closed again if that fails."""
    runner = AsyncRunner(f"{name}-nats")
    try:
        runner.call(opener(), timeout=30)
    except BaseException:
        runner.close()
        raise
    return runner


async def connect(servers: Sequence[str], name: str) -> NATS:
    """A client that reconnects forever (a restarted server is found again)."""

    async def on_error(exc: Exception) -> None:
        log.debug("nats: %s", exc)

    async def on_disconnect() -> None:
        log.info("nats: disconnected; reconnecting")

    try:
        return await nats.connect(
            servers=list(servers), name=name, allow_reconnect=True,
            max_reconnect_attempts=-1, reconnect_time_wait=0.25, connect_timeout=2,
            error_cb=on_error, disconnected_cb=on_disconnect, pending_size=64 << 20)
    except Exception as exc:  # NoServersError, OSError, timeouts
        raise NatsUnavailable(f"cannot connect to NATS at {', '.join(servers)} ({exc}); check "
                              "jetstream.servers and that nats-server runs with -js") from exc


async def bucket_keys(js: Any, bucket: str) -> list[str]:
    """The keys of KV `bucket`, from its stream's subject listing: one request that sees
    every put before it. `KeyValue.keys()` starts a watcher, which costs a consumer and
    misses a key put just before about once in 300 calls (NATS 2.9)."""
    prefix = KV_PRE_TEMPLATE.format(bucket=bucket)
    info = await js.stream_info(KV_STREAM_TEMPLATE.format(bucket=bucket),
                                subjects_filter=f"{prefix}>")
    return [subject[len(prefix):] for subject in info.state.subjects or {}]
