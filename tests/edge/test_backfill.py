"""One edge agent cut off from sensorlake for a simulated hour (1 Hz x 10 metrics, an
injectable clock), then reconnected: the backlog arrives completely and in order at a
bounded rate, live readings keep arriving during the backfill, and the outbox never deletes
anything above the watermark that sensorlake's log actually holds."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import orjson

from sensorlake.auth.tokens import Role, TokenStore
from sensorlake.catalog import Catalog
from sensorlake.config import EdgeSettings
from sensorlake.edge import HttpTransport, Outbox, Uploader
from sensorlake.edge.transport import Unreachable
from sensorlake.registry import Device, DeviceRegistry

DEVICE = "meter-1"
METRICS = [f"m{i}" for i in range(10)]
T0 = 1_795_420_800.0  # 2026-11-23T08:00:00Z, seconds


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Cuttable:
    """The real HTTP transport, with a switch that makes sensorlake unreachable."""

    def __init__(self, inner: HttpTransport) -> None:
        self.inner = inner
        self.cut = False
        self.sends = 0

    def send(self, bodies: list[bytes]) -> int | None:
        if self.cut:
            raise Unreachable("cable cut (test)")
        self.sends += 1
        return self.inner.send(bodies)

    def watermark(self) -> int | None:
        return None

    def close(self) -> None:
        self.inner.close()


def server_log(data: Path) -> tuple[int, list[tuple[int, list[float]]]]:
    """(the log's watermark of DEVICE, [(offset, [ts of each entry])] in offset order)."""
    with closing(sqlite3.connect(f"file:{data}/log/log.db?mode=ro", uri=True)) as db:
        mark = db.execute("select seq from watermarks where device_id = ?", (DEVICE,)).fetchone()
        rows = db.execute('select "offset", payload from entries where device_id = ? '
                          'order by "offset"', (DEVICE,)).fetchall()
    return (mark[0] if mark else 0,
            [(o, [e["ts"] / 1000 for e in orjson.loads(p)["batch"]]) for o, p in rows])


def test_backfill_after_a_simulated_hour_offline(tmp_path: Path,
                                                 make_server: Callable) -> None:
    data = tmp_path / "data"
    catalog = Catalog(data / "catalog.db")
    DeviceRegistry(catalog).upsert([Device(id=DEVICE)])
    token, _ = TokenStore(catalog).create(Role.INGEST, "default", DEVICE)
    catalog.close()
    server = make_server(data, SENSORLAKE_LOG__KEEP_ACKED_SECONDS="86400")
    server.start()

    clock = Clock()
    settings = EdgeSettings(backfill_per_second=300, live_seconds=30, message_readings=100,
                            window_messages=10, resend_seconds=30)
    outbox = Outbox(tmp_path / "outbox.db", clock=clock)
    transport = Cuttable(HttpTransport(server.url, DEVICE, token))
    uploader = Uploader(outbox, DEVICE, transport, settings, clock=clock)
    appended: list[float] = []

    def tick(seconds: int = 1) -> None:
        """`seconds` of the device's life: one reading set per second, then an upload step."""
        items = []
        for _ in range(seconds):
            clock.now += 1
            appended.append(clock.now)
            items.append((int(clock.now * 1e6), {m: float(len(appended)) for m in METRICS}))
        outbox.append_many(DEVICE, items)
        uploader.step()
        mark, _ = server_log(data)
        assert outbox.status()[0]["watermark"] <= mark, "deleted above the server's watermark"

    for _ in range(60):  # a minute online
        tick()
    assert outbox.status()[0]["backlog"] == 0
    transport.cut = True
    for _ in range(60):  # an hour offline, a minute at a time
        tick(60)
    cut_end = clock.now
    assert outbox.status()[0]["backlog"] == 3600
    transport.cut = False
    clock.now += 60  # the backoff after the last failure has passed
    live_during_backfill: list[float] = []
    steps = 0
    while outbox.status()[0]["backlog"] > 0:
        tick()
        steps += 1
        assert steps < 100, "backfill does not finish"
        _, entries = server_log(data)
        delivered = {ts for _, stamps in entries for ts in stamps}
        if outbox.status()[0]["backlog"] > 0:
            assert clock.now in delivered, f"live reading at +{steps}s waits for the backlog"
            live_during_backfill.append(clock.now)

    _, entries = server_log(data)
    delivered = [ts for _, stamps in entries for ts in stamps]
    assert sorted(delivered) == appended, "every reading delivered exactly once"
    backlog_order = [ts for ts in delivered if cut_end - 3600 < ts <= cut_end]
    assert backlog_order == sorted(backlog_order), "the backlog arrived out of order"
    assert len(live_during_backfill) >= 10  # 3,600 sets at 300/s: about 12 steps
    assert 10 <= steps <= 20, f"backfill took {steps} s: not bounded at 300 sets/s"
    status = outbox.status()[0]
    assert status["backlog"] == 0 and status["dropped"] == 0
    assert status["confirmed"] == len(appended)
    outbox.close()
    transport.close()
    assert server.stop() == 0, server.output()


def test_a_new_outbox_for_a_known_device_loses_nothing(tmp_path: Path,
                                                      make_server: Callable) -> None:
    """The outbox file was replaced (seqs start at 1 again) for a device whose seqs 1..3
    sensorlake already holds: its first message is recognised as a collision, and every
    message moves above the server's watermark instead of being taken for a duplicate
    (sending a window of 5 at once would have lost seqs 1..3 of the new life)."""
    data = tmp_path / "data"
    catalog = Catalog(data / "catalog.db")
    DeviceRegistry(catalog).upsert([Device(id=DEVICE)])
    token, _ = TokenStore(catalog).create(Role.INGEST, "default", DEVICE)
    catalog.close()
    server = make_server(data)
    server.start()
    clock = Clock()
    for life in range(2):
        outbox = Outbox(tmp_path / f"outbox-{life}.db", clock=clock)
        transport = HttpTransport(server.url, DEVICE, token)
        uploader = Uploader(outbox, DEVICE, transport,
                            EdgeSettings(message_readings=1, window_messages=5), clock=clock)
        count = 3 if life == 0 else 50
        outbox.append_many(DEVICE, [(int((T0 + life * 1000 + i) * 1e6), {"m0": float(i)})
                                    for i in range(count)])
        for _ in range(40):
            clock.now += 1
            uploader.step()
        assert outbox.status()[0]["backlog"] == 0, outbox.status()
        outbox.close()
        transport.close()
    mark, entries = server_log(data)
    assert mark == 53
    delivered = sorted(ts for _, stamps in entries for ts in stamps)
    assert delivered == sorted([T0 + i for i in range(3)] + [T0 + 1000 + i for i in range(50)])
    assert server.stop() == 0, server.output()
