"""Broker URLs and paho-mqtt clients set up the way sensorlake needs them (ingest, edge
agent, simulator and benchmarks share this).

    mqtt://host:1883        plain TCP        mqtts://host:8883   TLS (system CA store)
    mqtt://user:pass@host   credentials in the URL (else pass username/password)
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from paho.mqtt.client import Client, MQTTErrorCode, MQTTv5, MQTTv311
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from sensorlake.errors import ConfigError

PUBACK = 0x40
"""The fixed header byte of a PUBACK packet."""
READ_CHUNK = 1 << 16


class BufferedClient(Client):
    """paho's Client, reading the socket in 64 KiB chunks.

    paho reads each packet with two to four `recv` calls (1 byte of header, the length
    byte by byte, then the body) and one `select` per packet: about a syscall per few dozen
    bytes, which caps a subscriber at a few thousand messages per second. Here the socket is
    read in large chunks into a buffer that paho's reads are served from, and `loop_read`
    keeps going while the buffer holds data (select would not see it).

    `direct_publish`, when set, receives every QoS 0/1 PUBLISH as (topic, payload, mid, qos)
    straight from the packet: no MQTTMessage (with its threading.Condition), no MQTT 5
    property objects (ingest uses none), no per-message topic matching for
    `message_callback_add` (unused) and no callback locks. QoS 2 takes paho's own path."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._buffer = b""
        self._buffer_at = 0
        self._buffer_sock: object = None
        self.direct_publish: Callable[[str, bytes, int, int], None] | None = None

    def _handle_publish(self) -> MQTTErrorCode:
        header, packet = self._in_packet["command"], self._in_packet["packet"]
        qos = (header & 0x06) >> 1
        if self.direct_publish is None or qos == 2 or (not self._manual_ack and qos):
            return super()._handle_publish()
        at = 2 + (packet[0] << 8 | packet[1])
        topic = bytes(packet[2:at])
        mid = 0
        if qos:
            mid = packet[at] << 8 | packet[at + 1]
            at += 2
        if self._protocol == MQTTv5:  # skip the properties: a varint length, then them
            length = shift = 0
            while True:
                byte = packet[at]
                at += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            at += length
        try:
            name = topic.decode("utf-8")
        except UnicodeDecodeError:
            name = topic.decode("utf-8", "replace")
        self.direct_publish(name, bytes(packet[at:]), mid, qos)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._buffer_sock is not self._sock:  # a new connection: drop stale bytes
            self._buffer, self._buffer_at, self._buffer_sock = b"", 0, self._sock
        if self._buffer_at >= len(self._buffer):
            data = super()._sock_recv(READ_CHUNK)
            if len(data) <= bufsize:
                return data
            self._buffer, self._buffer_at = data, 0
        start = self._buffer_at
        self._buffer_at = start + bufsize
        return self._buffer[start:start + bufsize]

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        while (rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._sock is not None
               and self._buffer_sock is self._sock and self._buffer_at < len(self._buffer)):
            rc = super().loop_read(max_packets)
        return rc


@dataclass(frozen=True)
class BrokerUrl:
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None

    def __str__(self) -> str:  # never shows the password
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_broker_url(url: str) -> BrokerUrl:
    """`mqtt://[user[:pass]@]host[:port]` (or mqtts://); ConfigError naming what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ConfigError(f"broker URL '{url.split('@')[-1]}' must start with mqtt:// or "
                          "mqtts:// (e.g. mqtt://127.0.0.1:1883)")
    if not parts.hostname:
        raise ConfigError(f"broker URL '{url.split('@')[-1]}' names no host")
    tls = parts.scheme in ("mqtts", "ssl")
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        raise ConfigError(f"broker URL '{url.split('@')[-1]}' has an invalid port") from None
    return BrokerUrl(parts.hostname, port, tls, unquote(parts.username) if parts.username
                     else None, unquote(parts.password) if parts.password else None)


def make_client(client_id: str, protocol: str = "5", persistent: bool = True,
                manual_ack: bool = False) -> BufferedClient:
    """A paho 2.x client (callback API v2). `persistent`: MQTT 3.1.1 clean_session=False
    (MQTT 5 asks for the session in `connect_properties`)."""
    if protocol == "5":
        return BufferedClient(CallbackAPIVersion.VERSION2, client_id=client_id,
                              protocol=MQTTv5, manual_ack=manual_ack)
    if protocol != "3.1.1":
        raise ConfigError(f"MQTT protocol '{protocol}' is not supported: use 5 or 3.1.1")
    return BufferedClient(CallbackAPIVersion.VERSION2, client_id=client_id,
                          protocol=MQTTv311, clean_session=not persistent,
                          manual_ack=manual_ack)


def connect_properties(protocol: str, session_expiry: int = 0,
                       receive_maximum: int | None = None) -> Properties | None:
    """MQTT 5 CONNECT properties: how long the broker keeps the session, and how many QoS 1
    messages it may have in flight to this client."""
    if protocol != "5":
        return None
    props = Properties(PacketTypes.CONNECT)
    if session_expiry:
        props.SessionExpiryInterval = session_expiry
    if receive_maximum:
        props.ReceiveMaximum = receive_maximum
    return props


def start(client: Client, broker: BrokerUrl, username: str | None, password: str | None,
          protocol: str = "5", keepalive: int = 30, persistent: bool = True,
          properties: Properties | None = None, reconnect_max: float = 30) -> None:
    """Connect in the background (paho's network thread) and keep reconnecting with
    exponential backoff from 1 s to `reconnect_max` s."""
    user = broker.username or username
    if user:
        client.username_pw_set(user, broker.password or password)
    if broker.tls:
        client.tls_set_context(ssl.create_default_context())
    client.reconnect_delay_set(1, max(1, int(reconnect_max)))
    kwargs: dict[str, Any] = {"keepalive": keepalive}
    if protocol == "5":
        kwargs["clean_start"] = not persistent
        kwargs["properties"] = properties
    client.connect_async(broker.host, broker.port, **kwargs)
    client.loop_start()


def ack_many(client: Client, mids: list[int]) -> None:
    """PUBACK many QoS 1 messages with one queued write instead of one per message.

    paho's `ack(mid, 1)` queues one packet and wakes its network thread once per message;
    a PUBACK is four fixed bytes (MQTT 3.1.1, and MQTT 5 with reason "success"), so the
    group goes out as one buffer. Falls back to `ack()` if paho's internals differ."""
    queue = getattr(client, "_packet_queue", None)
    if queue is None or not mids:
        for mid in mids:
            client.ack(mid, 1)
        return
    data = b"".join(bytes((PUBACK, 2, mid >> 8, mid & 0xFF)) for mid in mids)
    queue(PUBACK, data, 0, 0)
