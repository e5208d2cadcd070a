"""MQTT ingest on its own (no edge agent): a PUBACK only after the durable append.

Raw devices publish QoS 1 once each (they never resend what the broker acknowledged) while
`sensorlake up` is killed -9 and its log is kept nearly full (Backpressure). The broker
holds ingest's persistent session; ingest withholds PUBACKs for what it has not stored, so
after the restarts every message is in the log exactly once. An ingest that acknowledged on
receipt would lose what was in its memory at the kill.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import orjson
import pytest
from mqtt_support import Broker, Device

from sensorlake.catalog import Catalog
from sensorlake.config import MqttSettings, MqttSubscription, load_settings
from sensorlake.ingest.broker_auth import issue_device_token
from sensorlake.ingest.mqtt import envelopes_of
from sensorlake.ingest.mqtt_topics import TopicRouter
from sensorlake.registry import Device as Registered
from sensorlake.registry import DeviceRegistry

DEVICES = 4
MESSAGES = 600  # per device


def test_topic_routes_and_message_ids_match_http() -> None:
    """The same envelope has the same message id over MQTT as over HTTP (so they dedupe)."""
    from sensorlake.auth.tokens import Principal, Role
    from sensorlake.ingest.envelopes import parse_body

    settings = MqttSettings(subscriptions={
        "devices": MqttSubscription(),
        "lora": MqttSubscription(topic="application/+/device/+/event/up", codec="cayenne",
                                 tenant="acme", device_level=3)})
    router = TopicRouter(settings, "default")
    route = router.route("sensorlake/aq-1/up")
    assert route is not None and (route.tenant, route.device, route.codec) == (
        "default", "aq-1", "envelope")
    lora = router.route("application/7/device/0004a30b/event/up")
    assert lora is not None and (lora.tenant, lora.device) == ("acme", "0004a30b")
    assert router.route("other/aq-1/up") is None
    assert router.route("sensorlake/bad+id/up").device is None  # type: ignore[union-attr]

    body = orjson.dumps({"device": "aq-1", "seq": 7, "readings": {"pm2_5": 1.0}})
    over_mqtt, refused = envelopes_of(route, "sensorlake/aq-1/up", body, 1)
    over_http = parse_body(body, Principal("t", Role.INGEST, "default", "aq-1"), 1).envelopes
    assert not refused and [e.msg_id for e in over_mqtt] == [e.msg_id for e in over_http]
    assert over_mqtt[0].seq == 7 and over_mqtt[0].source == "mqtt:sensorlake/aq-1/up"
    claims_other = orjson.dumps({"device": "aq-2", "seq": 1, "readings": {"pm2_5": 1.0}})
    kept, refused = envelopes_of(route, "sensorlake/aq-1/up", claims_other, 1)
    assert refused and kept[0].device_id == "aq-1" and kept[0].payload == claims_other


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_raw_devices_lose_nothing_across_kill9_and_backpressure(
        protocol: str, tmp_path: Path, make_broker: Callable[..., Broker],
        make_server: Callable) -> None:
    data = tmp_path / "data"
    catalog = Catalog(data / "catalog.db")
    names = [f"raw-{i}" for i in range(DEVICES)]
    DeviceRegistry(catalog).upsert([Registered(id=n) for n in names])
    tokens = {n: issue_device_token(catalog, "default", n) for n in names}
    catalog.close()
    broker = make_broker(load_settings(data_dir=data))
    broker.configure()
    broker.start()
    server = make_server(
        data, SENSORLAKE_MQTT__URL=broker.url, SENSORLAKE_MQTT__PROTOCOL=protocol,
        SENSORLAKE_MQTT__BATCH_MESSAGES="200", SENSORLAKE_LOG__MAX_BYTES="40000",
        SENSORLAKE_LOG__KEEP_ACKED_SECONDS="0", SENSORLAKE_WORKER__LAKE_FLUSH_SECONDS="0.3")
    server.start()
    devices = [Device(broker, n, tokens[n], protocol) for n in names]
    for device in devices:
        assert device.connected.wait(20), device.refused
    kills = 0
    began = time.monotonic()
    for seq in range(1, MESSAGES + 1):
        for device in devices:
            body = {"device": device.device, "seq": seq, "ts": 1_795_435_200_000 + seq * 1000,
                    "readings": {"pm2_5": 5.0, "pm10": 9.0}}
            device.client.publish(f"sensorlake/{device.device}/up", orjson.dumps(body), qos=1)
        if seq == MESSAGES // 2:
            time.sleep(0.3)  # let ingest hold some groups in flight
            server.kill9()
            kills += 1
            server.start()
        if seq % 100 == 0:
            time.sleep(0.05)
    published = time.monotonic()
    for device in devices:
        device.wait_watermark(MESSAGES, timeout=90)
    print(f"\nMQTT {protocol}: published in {published - began:.1f}s, all stored after "
          f"{time.monotonic() - began:.1f}s")
    for device in devices:
        device.close()
    with closing(sqlite3.connect(f"file:{data}/log/log.db?mode=ro", uri=True)) as db:
        marks = dict(db.execute("select device_id, seq from watermarks").fetchall())
        pending = db.execute("select count(*) from pending_seqs").fetchone()[0]
    assert marks == dict.fromkeys(names, MESSAGES) and pending == 0
    output = server.output()
    assert server.stop() == 0, output
    assert kills == 1
    assert "log append failed, PUBACK withheld" in output, "backpressure never happened"


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_shared_subscription_spreads_messages_over_ingest_processes(
        protocol: str, tmp_path: Path, make_broker: Callable[..., Broker]) -> None:
    """Two ingests in one $share group (one log, as in server mode): each gets a part,
    together every message once."""
    from sensorlake.ingest.mqtt import MqttIngest
    from sensorlake.log import MemoryLog

    data = tmp_path / "data"
    catalog = Catalog(data / "catalog.db")
    DeviceRegistry(catalog).upsert([Registered(id="shared-1")])
    token = issue_device_token(catalog, "default", "shared-1")
    catalog.close()
    broker = make_broker(load_settings(data_dir=data))
    broker.configure()
    broker.start()
    settings = load_settings(data_dir=data, mqtt={"url": broker.url, "protocol": protocol,
                                                  "shared_group": "ingest"})
    log = MemoryLog()
    ingests = [MqttIngest(settings, log, client_id=f"ingest-{i}") for i in range(2)]
    for ingest in ingests:
        ingest.start()
    deadline = time.monotonic() + 20
    while not all(i.counters.connected for i in ingests):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)  # the SUBSCRIBEs are answered
    device = Device(broker, "shared-1", token, protocol)
    assert device.connected.wait(20)
    for seq in range(1, 201):
        device.client.publish("sensorlake/shared-1/up", orjson.dumps(
            {"device": "shared-1", "seq": seq, "readings": {"pm2_5": 1.0}}), qos=1)
    device.wait_watermark(200)
    counts = [ingest.counters.stored for ingest in ingests]
    device.close()
    for ingest in ingests:
        ingest.stop()
    assert log.stats().last_offset == 200
    assert sum(counts) == 200 and min(counts) > 0, counts
