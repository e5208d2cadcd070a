"""MQTT ingest into JetStream (server profile): `sensorlake run ingest --no-http` processes
(two sharing the subscription, MQTT 5 `$share`) and a worker storing into PostgreSQL, while
an ingest process or NATS is killed -9 mid-run and restarted. Every message published (QoS
1, once) lands in PostgreSQL exactly once, the stream holds each message id once
(Nats-Msg-Id), and each device's watermark reaches its last seq on `sensorlake/<device>/ack`."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from paho.mqtt.client import Client
from stack import Proc, Stack, stack

from sensorlake.catalog import Catalog
from sensorlake.config import JetStreamSettings
from sensorlake.ingest import mqtt_client
from sensorlake.registry import Device, DeviceRegistry
from sensorlake.server.board import REPORT_SECONDS, Board
from server_support import NATS_URL, NatsServer
from services import require_service, unique_name

DEVICES = 4
MESSAGES = 150  # per device


class Publisher:
    """One paho client publishing every message once with QoS 1 and following the acks."""

    def __init__(self, prefix: str, devices: list[str]) -> None:
        self.prefix, self.devices = prefix, devices
        self.watermarks: dict[str, int] = {}
        self.ready = threading.Event()
        self.client: Client = mqtt_client.make_client(unique_name("pub"), "5", persistent=False)
        self.client.on_connect = lambda c, *_: (c.subscribe([(f"sensorlake/{d}/ack", 1)
                                                             for d in devices]), self.ready.set())
        self.client.on_message = self._on_message
        mqtt_client.start(self.client, mqtt_client.parse_broker_url("mqtt://127.0.0.1:1883"),
                          None, None, "5", persistent=False)
        assert self.ready.wait(10), "the publisher did not connect to Mosquitto"

    def _on_message(self, client: Client, userdata: object, msg: object) -> None:
        if not msg.payload:  # type: ignore[attr-defined]  # our own cleanup
            return
        body = orjson.loads(msg.payload)  # type: ignore[attr-defined]
        device = body["device"]
        self.watermarks[device] = max(self.watermarks.get(device, 0), body["watermark"])

    def publish(self, device: str, body: bytes) -> None:
        self.client.publish(f"{self.prefix}/{device}/up", body, qos=1).wait_for_publish(10)

    def close(self) -> None:
        for device in self.devices:  # leave the broker clean: no retained acks of ours
            self.client.publish(f"sensorlake/{device}/ack", b"", qos=1, retain=True)
        time.sleep(0.2)
        self.client.disconnect()
        self.client.loop_stop()


def _plan(devices: list[str]) -> tuple[list[tuple[str, bytes]], dict[tuple[str, str, int], float]]:
    base = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
    expected: dict[tuple[str, str, int], float] = {}
    messages = []
    for seq in range(1, MESSAGES + 1):
        for d, device in enumerate(devices):
            ts = base + timedelta(seconds=seq)
            value = round(10 + (seq + d) % 30 * 0.5, 1)
            expected[(device, "temperature", int(ts.timestamp()) * 1_000_000)] = value
            messages.append((device, orjson.dumps({
                "device": device, "seq": seq, "ts": ts.isoformat().replace("+00:00", "Z"),
                "readings": {"temperature": value}})))
    return messages, expected


def _add_mqtt(s: Stack, prefix: str) -> None:
    s.config.write_text(s.config.read_text() + "\n".join([
        "[mqtt]", 'url = "mqtt://127.0.0.1:1883"', 'shared_group = "ingest"',
        "session_expiry_seconds = 120", "batch_messages = 50", "receive_maximum = 200",
        "[mqtt.subscriptions.devices]", f'topic = "{prefix}/+/up"', ""]))


def _wait_started(s: Stack, timeout: float = 60) -> None:
    """Until every process printed that it runs (its subscriptions and consumer exist)."""
    deadline = time.monotonic() + timeout
    while not all("is running" in p.output() for p in s.procs):
        assert time.monotonic() < deadline, "\n".join(p.output() for p in s.procs)
        time.sleep(0.1)


def _wait_rows(s: Stack, want: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    got = 0
    while time.monotonic() < deadline:
        got = len(s.hot_rows())
        if got >= want:
            return
        time.sleep(0.3)
    raise AssertionError(f"{got} of {want} readings in PostgreSQL:\n" + "\n".join(
        p.output() for p in s.procs))


def _run(s: Stack, ingest_processes: int, during: Callable[[int, int, list[Proc]], None],
         ) -> None:
    """Devices publish every message once while `during(i, n, ingest)` disturbs the
    deployment; then PostgreSQL, the stream, the lake and the watermarks are exact."""
    prefix = unique_name("slkmq")
    devices = [f"{prefix}-d{i}" for i in range(DEVICES)]
    _add_mqtt(s, prefix)
    catalog = Catalog(s.data_dir / "catalog.db")
    DeviceRegistry(catalog).upsert([Device(id=d) for d in devices])
    catalog.close()
    client_ids = [f"{prefix}-ingest-{i}" for i in range(ingest_processes)]
    ingest = [s.spawn("ingest", "--no-http", "--client-id", c) for c in client_ids]
    s.spawn("worker")
    publisher = Publisher(prefix, devices)
    try:
        _wait_started(s)
        time.sleep(0.5)  # every ingest process subscribed (its session exists from now)
        messages, expected = _plan(devices)
        for i, (device, body) in enumerate(messages):
            publisher.publish(device, body)
            during(i, len(messages), ingest)
            time.sleep(0.004)
        _wait_rows(s, len(expected))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(
                publisher.watermarks.get(d, 0) < MESSAGES for d in devices):
            time.sleep(0.1)
        assert {d: publisher.watermarks.get(d) for d in devices} == dict.fromkeys(
            devices, MESSAGES)
        hot = s.hot_rows()
        assert hot == expected, f"{len(set(expected) - set(hot))} lost"
        assert s.stream_last() == len(messages), "the stream holds a message twice"
        s.assert_exact(expected)
        assert all("MQTT ingest from" in p.log_path.read_text() for p in ingest)
    finally:
        publisher.close()
        _drop_sessions(client_ids, s)


def test_mqtt_into_jetstream_exactly_once_across_kill9(tmp_path: Path) -> None:
    """Two ingest processes share the subscription; one is killed -9 and restarted."""
    require_service("Mosquitto", 1883)
    require_service("NATS", 4222)

    def kill_one(i: int, n: int, ingest: list[Proc]) -> None:
        if i == n // 3:
            ingest[0].signal(signal.SIGKILL)  # groups in flight, PUBACKs withheld
        if i == n // 2:
            ingest[0].start()

    with stack(tmp_path, [NATS_URL], batch_messages=100) as s:
        _run(s, 2, kill_one)


def test_mqtt_ingest_withholds_pubacks_while_nats_is_down(tmp_path: Path) -> None:
    """Our own nats-server is killed -9 and restarted mid-run: ingest withholds the PUBACKs,
    retries the same message ids (the stream answers duplicate), and loses nothing."""
    require_service("Mosquitto", 1883)
    nats_server = NatsServer(tmp_path / "nats").start()

    def restart_nats(i: int, n: int, ingest: list[Proc]) -> None:
        if i == n // 4:  # down for 3 s, longer than publish_retry_seconds: groups fail
            nats_server.kill(signal.SIGKILL)
            threading.Timer(3.0, nats_server.start).start()

    try:
        with stack(tmp_path, [nats_server.url], batch_messages=100, publish_retry=1,
                   publish_timeout=0.5) as s:
            _run(s, 1, restart_nats)
            board = Board(JetStreamSettings(servers=[nats_server.url], stream=s.stream))
            try:  # the kill -9 can take unsynced board entries: wait for the next round
                deadline = time.monotonic() + 5 * REPORT_SECONDS
                while not (found := [r for r in board.reports() if r.get("mqtt")]):
                    assert time.monotonic() < deadline, "no ingest report on the board"
                    time.sleep(0.2)
                [report] = found
            finally:
                board.close()
            assert report["mqtt"]["retries"] > 0  # PUBACKs were withheld, groups retried
    finally:
        nats_server.kill()


def _drop_sessions(client_ids: list[str], s: Stack) -> None:
    """Stop the ingest processes, then end their persistent sessions on the shared broker."""
    for proc in s.procs:
        proc.stop(timeout=30)
    for client_id in client_ids:
        client = mqtt_client.make_client(client_id, "5", persistent=False)
        done = threading.Event()
        client.on_connect = lambda *_, done=done: done.set()
        mqtt_client.start(client, mqtt_client.parse_broker_url("mqtt://127.0.0.1:1883"),
                          None, None, "5", persistent=False)
        done.wait(5)
        client.disconnect()
        client.loop_stop()
