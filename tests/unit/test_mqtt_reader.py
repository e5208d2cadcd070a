"""The MQTT ingest client's bulk PUBLISH reader, on a real socket pair: every whole QoS 0/1
PUBLISH is delivered once with its topic, payload and packet id, MQTT 5 properties are
skipped, and anything else (another packet type, a packet not yet whole) is left to paho."""

from __future__ import annotations

import socket
import struct

import pytest
from paho.mqtt.client import MQTTErrorCode

from sensorlake.ingest import mqtt_client
from sensorlake.ingest.mqtt_wire import publish_packet as publish


def reader(protocol: str) -> tuple[mqtt_client.BufferedClient, socket.socket, list]:
    client = mqtt_client.make_client("reader-test", protocol, manual_ack=True)
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    client._sock = ours  # what paho's connect would have set
    got: list[tuple[str, bytes, int, int]] = []
    client.direct_publish = lambda *message: got.append(message)
    return client, theirs, got


def read_all(client: mqtt_client.BufferedClient) -> None:
    while client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS and (
            client._buffer_at < len(client._buffer)):
        pass


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_whole_publishes_are_delivered_once_in_order(protocol: str) -> None:
    client, broker, got = reader(protocol)
    props = b"" if protocol == "5" else None
    big = b"x" * 70_000  # over one 64 KiB read, and a 3-byte remaining length
    wire = (publish("sensorlake/a/up", b'{"seq":1}', 1, 7, props)
            + publish("sensorlake/b/up", b"", 0, properties=props)
            + publish("sensorlake/c/up", big, 1, 65535, props))
    broker.sendall(wire[:10])  # a first packet cut short: nothing yet
    client.loop_read()
    assert got == []
    broker.sendall(wire[10:])
    for _ in range(20):
        read_all(client)
        if len(got) == 3:
            break
    assert got == [("sensorlake/a/up", b'{"seq":1}', 7, 1), ("sensorlake/b/up", b"", 0, 0),
                   ("sensorlake/c/up", big, 65535, 1)]


def test_mqtt5_properties_are_skipped_and_other_packets_go_to_paho() -> None:
    client, broker, got = reader("5")
    by_paho: list[int] = []
    client._handle_publish = lambda: by_paho.append(1)  # type: ignore[method-assign]
    user_property = b"\x26" + struct.pack("!H", 1) + b"k" + struct.pack("!H", 1) + b"v"
    pingresp = b"\xd0\x00"
    broker.sendall(publish("t/1", b"one", 1, 1, user_property) + pingresp
                   + publish("t/2", b"two", 1, 2, b""))
    for _ in range(5):
        read_all(client)
    assert got == [("t/1", b"one", 1, 1), ("t/2", b"two", 2, 1)]
    assert by_paho == []  # both whole in the buffer: the bulk reader took them
    assert client._buffer_at == len(client._buffer)


def test_ack_many_writes_one_puback_per_mid() -> None:
    client, _broker, _ = reader("3.1.1")
    queued: list[bytes] = []
    client._packet_queue = lambda command, data, mid, qos, *a: queued.append(data)  # type: ignore[method-assign]
    mqtt_client.ack_many(client, [1, 256, 65535])
    assert queued == [b"\x40\x02\x00\x01\x40\x02\x01\x00\x40\x02\xff\xff"]
