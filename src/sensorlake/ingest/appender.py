"""Appending from the event loop: the requests of one loop turn share one log submit.

Ingest serves thousands of requests per second on one event loop. Submitting each to the log
on its own costs a thread-safe future and a cross-thread wake-up per request; here every
request of a loop turn joins one `Log.submit_many`, whose completion wakes the loop once and
settles each request with its own outcome (its AppendResult, or its Backpressure). The
durability promise is unchanged: a request's future resolves only after the group commit
that carries it returned.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from concurrent.futures import Future

from sensorlake.errors import MessageTooLarge
from sensorlake.log.base import AppendResult, Envelope, Log

Pending = list[tuple[Sequence[Envelope], asyncio.Future[AppendResult]]]


class LogAppender:
    """`await appender.append(envelopes)`: durable on return, batched with its neighbours."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self._pending: dict[asyncio.AbstractEventLoop, Pending] = {}

    async def append(self, envelopes: Sequence[Envelope]) -> AppendResult:
        check_sizes(self.log, envelopes)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[AppendResult] = loop.create_future()
        pending = self._pending.get(loop)
        if pending is None:
            pending = self._pending[loop] = []
            loop.call_soon(self._flush, loop)
        pending.append((envelopes, future))
        return await future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        pending = self._pending.pop(loop)
        try:
            done = self.log.submit_many([envelopes for envelopes, _ in pending])
        except Exception as exc:  # the log is closed or refuses outright
            _settle_all(pending, exc)
            return
        done.add_done_callback(lambda outcome: _wake(loop, pending, outcome))


def check_sizes(log: Log, envelopes: Sequence[Envelope]) -> None:
    """MessageTooLarge naming the device when an envelope is over the log's message limit
    (JetStream: the server's max_payload); checked before anything of the request is sent."""
    limit = getattr(log, "max_message_bytes", None)
    if limit is None:
        return
    for e in envelopes:
        if len(e.payload) > limit:
            raise MessageTooLarge(
                f"the envelope of device '{e.device_id}' is {len(e.payload):,} bytes, over the "
                f"log's limit of {limit:,} bytes per message (NATS max_payload): send its "
                "readings in several smaller envelopes")


def _wake(loop: asyncio.AbstractEventLoop, pending: Pending,
          outcome: Future[list[AppendResult | BaseException]]) -> None:
    """In the log's writer thread: hand the outcome to the event loop (one wake-up)."""
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
        loop.call_soon_threadsafe(_settle, pending, outcome)


def _settle(pending: Pending, outcome: Future[list[AppendResult | BaseException]]) -> None:
    error = outcome.exception()
    if error is not None:
        _settle_all(pending, error)
        return
    for (_, future), result in zip(pending, outcome.result(), strict=True):
        if future.done():  # the client went away and the request was cancelled
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


def _settle_all(pending: Pending, error: BaseException) -> None:
    for _, future in pending:
        if not future.done():
            future.set_exception(error)
