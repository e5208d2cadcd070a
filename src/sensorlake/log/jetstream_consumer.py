"""The durable pull consumer that N server workers share.

JetStream hands each worker a different set of messages (interleaved offsets) and redelivers
any message not acknowledged within jetstream.ack_wait_seconds - to whichever worker asks
next. A worker acknowledges only after PostgreSQL committed the batch; while a commit waits
(PostgreSQL down) it sends `in_progress` so the messages are not redelivered to another
worker in the meantime. The consumer stops delivering a message after jetstream.max_deliver
deliveries: the worker quarantines a message on its last delivery instead of processing it,
and the MAX_DELIVERIES advisory (if a worker died holding that last delivery) is collected
here so a surviving worker quarantines it too.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass

import nats
import orjson
from nats.aio.msg import Msg
from nats.js import api

from sensorlake.config import JetStreamSettings
from sensorlake.log.jetstream_core import (
    NatsUnavailable,
    connect,
    is_transient,
    msg_row,
    open_runner,
    row_of,
    stream_config,
)
from sensorlake.log.memory import Row

log = logging.getLogger(__name__)
ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{consumer}"


@dataclass
class Delivery:
    """One message handed to this worker."""

    row: Row
    delivered: int
    """How many times JetStream has delivered it (1 the first time)."""
    msg: Msg

    @property
    def offset(self) -> int:
        return self.row[0]


class WorkQueue:
    """The shared durable consumer, used from one worker thread."""

    def __init__(self, settings: JetStreamSettings, max_bytes: int, name: str = "worker") -> None:
        self.settings = settings
        self.max_bytes = max_bytes
        self._exhausted: list[int] = []
        self._lock = threading.Lock()
        self._runner = open_runner(name, lambda: self._open(name))

    async def _open(self, name: str) -> None:
        cfg = self.settings
        self.nc = await connect(cfg.servers, name)
        self.js = self.nc.jetstream(timeout=max(cfg.publish_timeout_seconds, 5))
        try:
            await self.js.stream_info(cfg.stream)
        except nats.js.errors.NotFoundError:
            with contextlib.suppress(nats.js.errors.BadRequestError):  # created meanwhile
                await self.js.add_stream(stream_config(cfg, self.max_bytes))
        config = api.ConsumerConfig(
            durable_name=cfg.consumer, name=cfg.consumer, ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL, ack_wait=cfg.ack_wait_seconds,
            max_deliver=cfg.max_deliver, max_ack_pending=cfg.max_ack_pending,
            filter_subject=f"{cfg.subject_prefix}.>", max_waiting=512,
            num_replicas=cfg.replicas)
        try:
            await self.js.add_consumer(cfg.stream, config)
        except nats.js.errors.BadRequestError as exc:  # exists with other settings
            log.warning("using the existing consumer %s as it is (%s); delete it to apply "
                        "new jetstream settings", cfg.consumer, exc.description)
        self.sub = await self.js.pull_subscribe_bind(cfg.consumer, cfg.stream)
        await self.nc.subscribe(ADVISORY.format(stream=cfg.stream, consumer=cfg.consumer),
                                cb=self._on_exhausted)

    async def _on_exhausted(self, msg: Msg) -> None:
        with contextlib.suppress(Exception):
            seq = int(orjson.loads(msg.data)["stream_seq"])
            with self._lock:
                self._exhausted.append(seq)

    def _call(self, coro, timeout: float = 30):  # type: ignore[no-untyped-def]
        return self._runner.call(coro, timeout)

    def fetch(self, max_messages: int, wait: float) -> list[Delivery]:
        """Up to `max_messages` deliveries, waiting up to `wait` seconds for the first."""
        async def work() -> list[Delivery]:
            try:
                msgs = await self.sub.fetch(max_messages, timeout=max(wait, 0.05))
            except (TimeoutError, nats.errors.TimeoutError):
                return []
            return [Delivery(msg_row(m), m.metadata.num_delivered, m) for m in msgs
                    if m.reply]
        try:
            return list(self._call(work(), timeout=wait + 30))
        except Exception as exc:
            if is_transient(exc):
                raise NatsUnavailable(f"fetch from JetStream failed ({exc}); will retry") from exc
            raise

    def ack(self, deliveries: list[Delivery]) -> None:
        """Acknowledge (fire and forget, then one flush); a lost ack is a redelivery, which
        the store treats as a no-op."""
        self._each(deliveries, "ack")

    def in_progress(self, deliveries: list[Delivery]) -> None:
        """Tell JetStream these are still being worked on (resets their ack_wait)."""
        self._each(deliveries, "in_progress")

    def _each(self, deliveries: list[Delivery], action: str) -> None:
        async def work() -> None:
            for d in deliveries:
                await getattr(d.msg, action)()
            await self.nc.flush(timeout=10)
        try:
            self._call(work())
        except Exception as exc:
            log.warning("JetStream %s of %d messages failed (%s); they will be redelivered",
                        action, len(deliveries), exc)

    def take_exhausted(self) -> list[int]:
        """Offsets JetStream gave up on (max_deliver) since the last call."""
        with self._lock:
            out, self._exhausted = self._exhausted, []
        return out

    def get(self, offset: int) -> Row | None:
        async def work() -> Row | None:
            try:
                raw = await self.js.get_msg(self.settings.stream, seq=offset)
            except nats.js.errors.NotFoundError:
                return None
            return row_of(offset, raw.headers, raw.data or b"")
        return self._call(work())

    def pending(self) -> tuple[int, int]:
        """(messages not yet delivered, delivered but unacknowledged)."""
        info = self._call(self.js.consumer_info(self.settings.stream, self.settings.consumer))
        return int(info.num_pending or 0), int(info.num_ack_pending or 0)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._runner.call(self.nc.close(), timeout=5)
        self._runner.close()
