"""Broker URLs and paho-mqtt clients set up the way sensorlake needs them (ingest, edge
agent, simulator and benchmarks share this).

    mqtt://host:1883        plain TCP        mqtts://host:8883   TLS (system CA store)
    mqtt://user:pass@host   credentials in the URL (else pass username/password)
"""

from __future__ import annotations

import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from paho.mqtt.client import (
    MQTT_LOG_ERR,
    Client,
    MQTTErrorCode,
    MQTTv5,
    MQTTv311,
    time_func,
)
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from sensorlake.errors import ConfigError
from sensorlake.ingest.mqtt_wire import read_varint, split_publish

PUBACK = 0x40
"""The fixed header byte of a PUBACK packet."""
PUBACK_HEAD = (PUBACK << 8 | 2) << 16
"""A PUBACK as a big-endian 32-bit word, less its packet id: 0x40, length 2, then the id."""
READ_CHUNK = 1 << 16
SMALL_READ = 16 << 10


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
        self._last_read = 0
        self.gather_seconds = 0.0
        """When the last read returned little: wait this long before the next one, so one
        `recv` takes the many messages of a busy stream instead of one or two."""
        self.direct_publish: Callable[[str, bytes, int, int], None] | None = None

    def _packet_read(self) -> MQTTErrorCode:
        """Deliver every whole QoS 0/1 PUBLISH at the head of the buffer in one pass; any
        other packet, or one not yet whole, takes paho's own reader."""
        if self.direct_publish is not None and self._manual_ack \
                and self._in_packet["command"] == 0:
            if self._buffer_sock is not self._sock or self._buffer_at >= len(self._buffer):
                failed = self._fill_buffer()
                if failed is not None:
                    return failed
            if self._read_publishes():
                with self._msgtime_mutex:
                    self._last_bytes_received = time_func()
                return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._packet_read()

    def _fill_buffer(self) -> MQTTErrorCode | None:
        """Read the next chunk into the empty buffer; an error code as paho's reader gives."""
        self._buffer, self._buffer_at, self._buffer_sock = b"", 0, self._sock
        try:
            data = Client._sock_recv(self, READ_CHUNK)
        except BlockingIOError:
            return MQTTErrorCode.MQTT_ERR_AGAIN
        except OSError as err:
            self._easy_log(MQTT_LOG_ERR, "failed to receive on socket: %s", err)
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        if not data:
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        self._buffer, self._buffer_at, self._last_read = data, 0, len(data)
        return None

    def _read_publishes(self) -> int:
        """Hand the buffer's leading whole PUBLISH packets (QoS 0 and 1) to direct_publish;
        how many. Stops at anything else, which paho's reader then takes as usual."""
        buf, at, end = self._buffer, self._buffer_at, len(self._buffer)
        deliver, v5 = self.direct_publish, self._protocol == MQTTv5
        assert deliver is not None
        count = 0
        while at + 2 <= end:
            header = buf[at]
            qos = (header >> 1) & 3
            if header >> 4 != 3 or qos > 1:
                break  # not a PUBLISH of QoS 0 or 1
            length = read_varint(buf, at + 1, end)
            if length is None or length[1] + length[0] > end:
                break  # not all here yet (or malformed: paho's reader says so)
            body_at, packet_end = length[1], length[1] + length[0]
            parts = split_publish(buf, body_at, packet_end, qos, v5)
            if parts is None:
                break  # malformed: paho's reader reports it
            name, mid, payload_at = parts
            at = self._buffer_at = packet_end
            deliver(name, buf[payload_at:packet_end], mid, qos)
            count += 1
        return count

    def _handle_publish(self) -> MQTTErrorCode:
        header, packet = self._in_packet["command"], self._in_packet["packet"]
        qos = (header & 0x06) >> 1
        if self.direct_publish is None or qos == 2 or (not self._manual_ack and qos):
            return super()._handle_publish()
        parts = split_publish(packet, 0, len(packet), qos, self._protocol == MQTTv5)
        if parts is None:
            return super()._handle_publish()  # malformed: paho says so
        name, mid, at = parts
        self.direct_publish(name, bytes(packet[at:]), mid, qos)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._buffer_sock is not self._sock:  # a new connection: drop stale bytes
            self._buffer, self._buffer_at, self._buffer_sock = b"", 0, self._sock
        if self._buffer_at >= len(self._buffer):
            data = super()._sock_recv(READ_CHUNK)
            self._last_read = len(data)
            if len(data) <= bufsize:
                return data
            self._buffer, self._buffer_at = data, 0
        start = self._buffer_at
        self._buffer_at = start + bufsize
        return self._buffer[start:start + bufsize]

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        if (self.gather_seconds and self._last_read < SMALL_READ
                and self._buffer_at >= len(self._buffer)):
            time.sleep(self.gather_seconds)  # let a busy stream fill more than a packet
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
    data = struct.pack(f">{len(mids)}I", *(PUBACK_HEAD | mid for mid in mids))
    queue(PUBACK, data, 0, 0)
