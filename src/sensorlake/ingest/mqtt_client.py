"""Broker URLs and paho-mqtt clients set up the way sensorlake needs them (ingest, edge
agent, simulator and benchmarks share this).

    mqtt://host:1883        plain TCP        mqtts://host:8883   TLS (system CA store)
    mqtt://user:pass@host   credentials in the URL (else pass username/password)
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from paho.mqtt.client import Client, MQTTv5, MQTTv311
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from sensorlake.errors import ConfigError

PUBACK = 0x40
"""The fixed header byte of a PUBACK packet."""


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
                manual_ack: bool = False) -> Client:
    """A paho 2.x client (callback API v2). `persistent`: MQTT 3.1.1 clean_session=False
    (MQTT 5 asks for the session in `connect_properties`)."""
    if protocol == "5":
        return Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTv5,
                      manual_ack=manual_ack)
    if protocol != "3.1.1":
        raise ConfigError(f"MQTT protocol '{protocol}' is not supported: use 5 or 3.1.1")
    return Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTv311,
                  clean_session=not persistent, manual_ack=manual_ack)


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
