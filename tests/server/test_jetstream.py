"""JetStream specifics the log contract cannot check byte for byte: a full stream is
backpressure (never deletion), stats, and the shared worker consumer."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from sensorlake.config import JetStreamSettings
from sensorlake.errors import Backpressure, ConfigError
from sensorlake.log.base import Envelope, Span
from sensorlake.log.jetstream import JetStreamLog
from sensorlake.log.jetstream_consumer import WorkQueue
from server_support import delete_stream, jetstream_settings
from services import require_service

NOW = time.time_ns() // 1000
MiB = 1 << 20


def env(i: int, size: int = 1000, **kw: object) -> Envelope:
    return Envelope(f"m{i}", "t1", kw.get("device", "d.1 *"), "http", "envelope",  # type: ignore[arg-type]
                    b"x" * size, NOW, kw.get("seq"))  # type: ignore[arg-type]


@pytest.fixture
def stream() -> Iterator[JetStreamSettings]:
    require_service("NATS", 4222)
    settings = jetstream_settings(ack_wait_seconds=1, max_deliver=3)
    yield settings
    delete_stream(settings)


def test_full_stream_is_backpressure_never_deletion(stream: JetStreamSettings) -> None:
    with JetStreamLog(stream, max_bytes=MiB, keep_acked_seconds=3600) as log:
        stored = 0
        with pytest.raises(Backpressure, match="is full"):
            for i in range(0, 2000, 100):
                stored += log.append([env(j) for j in range(i, i + 100)]).accepted
        first = log.stats()
        assert first.first_offset == 1 and first.last_offset >= stored >= 800  # none dropped
        assert log.read(0, 10).span == Span(1, 10)
        assert first.stored_bytes <= MiB and first.oldest_unacked_us == NOW
        with pytest.raises(Backpressure):
            log.append([env(5000)])
        log.ack("lake", Span(1, 500))  # acknowledged: may now be purged to make room
        assert log.append([env(5000)]).accepted == 1
        after = log.stats()
        assert after.first_offset == 501 and after.acked == {"lake": 500}
        assert log.read(0, 1).span == Span(501, 501)


def test_tiny_limits_are_refused(stream: JetStreamSettings) -> None:
    with pytest.raises(ConfigError, match="too small"):
        JetStreamLog(stream, max_bytes=1000)


def test_prune_purges_only_old_acknowledged(stream: JetStreamSettings) -> None:
    old = NOW - 7200 * 1_000_000
    with JetStreamLog(stream, keep_acked_seconds=3600) as log:
        log.append([Envelope(f"o{i}", "t1", "d", "http", "envelope", b"x", old) for i in range(5)]
                   + [env(i, 10) for i in range(5)])
        log.ack("lake", Span(1, 8))
        assert log.stats().first_offset == 6  # 1..5 old and acked; 6..8 acked but recent
        assert log.prune() == 0


def test_shared_consumer_redelivers_and_quarantines_after_max_deliver(
        stream: JetStreamSettings) -> None:
    with JetStreamLog(stream) as log:
        log.append([env(i, 10) for i in range(4)])
        a, b = WorkQueue(stream, MiB * 64), WorkQueue(stream, MiB * 64)
        try:
            first = a.fetch(2, 2.0)
            second = b.fetch(10, 2.0)
            assert {d.offset for d in first} | {d.offset for d in second} == {1, 2, 3, 4}
            assert {d.offset for d in first}.isdisjoint(d.offset for d in second)
            b.ack(second)
            time.sleep(1.5)  # past ack_wait: a's two come again, to whoever asks
            again = b.fetch(10, 3.0)
            assert sorted(d.offset for d in again) == sorted(d.offset for d in first)
            assert all(d.delivered == 2 for d in again)
            a.in_progress(first)  # too late for a; harmless
            time.sleep(1.5)
            last = a.fetch(10, 3.0)
            assert all(d.delivered == 3 for d in last)  # the last chance (max_deliver = 3)
            time.sleep(2.5)
            assert sorted(b.take_exhausted() + a.take_exhausted()) in ([], [1, 2], [1, 2, 1, 2])
            assert a.get(1) is not None and a.get(1)[3] == "d.1 *"
            assert b.fetch(10, 0.5) == []
        finally:
            a.close()
            b.close()


def test_submit_many_gives_each_group_its_own_outcome(stream: JetStreamSettings) -> None:
    with JetStreamLog(stream, max_bytes=MiB) as log:
        log.append([env(0, 10)])
        outcomes = log.submit_many([
            [env(1, 10, seq=1, device="d"), env(0, 10)],
            [env(1, 10, seq=1, device="d")],
            [env(2, 10, seq=2, device="d")],
        ]).result(timeout=30)
        assert [(o.accepted, o.duplicates) for o in outcomes] == [(1, 1), (0, 1), (1, 0)]
        assert outcomes[2].watermarks == {("t1", "d"): 2}
        big = [env(i, 100_000) for i in range(1000, 1011)]  # more than 1 MiB in total
        outcomes = log.submit_many([[env(3, 10)], big]).result(timeout=60)
        assert outcomes[0].accepted == 1 and isinstance(outcomes[1], Backpressure)


def test_an_envelope_over_max_payload_is_refused_before_anything_is_sent(
        stream: JetStreamSettings) -> None:
    """HTTP answers 413 for it (ingest/http.py), not a 500 from inside the NATS client."""
    import asyncio

    from sensorlake.errors import MessageTooLarge
    from sensorlake.ingest.appender import LogAppender

    with JetStreamLog(stream, max_bytes=64 * MiB) as log:
        limit = log.max_message_bytes
        assert limit is not None and 0 < limit < 2 * MiB
        appender = LogAppender(log)
        with pytest.raises(MessageTooLarge, match=r"device 'd.1 \*' is .* smaller envelopes"):
            asyncio.run(appender.append([env(1), env(2, size=limit + 1)]))
        assert log.stats().last_offset == 0  # not even the small one of the same request
        assert asyncio.run(appender.append([env(3, size=limit)])).accepted == 1
