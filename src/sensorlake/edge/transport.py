"""How the edge agent reaches sensorlake: HTTP (the response carries the watermark) or MQTT
QoS 1 (the watermark arrives on `sensorlake/<device>/ack`). Either way only the watermark
confirms a reading; a broker's PUBACK does not."""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import orjson
from paho.mqtt.client import Client, MQTTMessage

from sensorlake.errors import AuthError, ConfigError, TransientError
from sensorlake.ingest import mqtt_client


class Unreachable(TransientError):
    """sensorlake (or its broker) cannot take messages now; retry with backoff."""

    def __init__(self, message: str, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Transport(Protocol):
    def send(self, bodies: list[bytes]) -> int | None:
        """Send envelopes; returns the device's watermark when the reply carries it.
        Raises Unreachable (retry later) or AuthError (the token is refused)."""
        ...

    def watermark(self) -> int | None:
        """The newest watermark received asynchronously (MQTT), if any."""
        ...

    def close(self) -> None: ...


class HttpTransport:
    """POST /api/v1/ingest, one NDJSON body per call."""

    def __init__(self, url: str, device: str, token: str, timeout: float = 30) -> None:
        base = url.rstrip("/")
        self.url = base if base.endswith("/api/v1/ingest") else base + "/api/v1/ingest"
        self.device = device
        self.last_duplicates = 0
        """Envelopes of the last request that sensorlake already held."""
        self.client = httpx.Client(timeout=timeout, headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"})

    def send(self, bodies: list[bytes]) -> int | None:
        try:
            response = self.client.post(self.url, content=b"\n".join(bodies) + b"\n")
        except httpx.HTTPError as exc:
            raise Unreachable(f"{self.url}: {type(exc).__name__}: {exc}") from None
        if response.status_code in (429, 502, 503, 504):
            retry = response.headers.get("Retry-After", "1")
            raise Unreachable(f"{self.url}: {response.status_code}",
                              float(retry) if retry.isdigit() else 1.0)
        if response.status_code in (401, 403):
            raise AuthError(f"{self.url} refused the token for device '{self.device}' "
                            f"({response.status_code}): {response.text[:200]}",
                            response.status_code)
        if response.status_code != 200:
            raise Unreachable(f"{self.url}: {response.status_code} {response.text[:200]}")
        reply = response.json()
        self.last_duplicates = int(reply.get("duplicates", 0))
        return reply.get("watermarks", {}).get(self.device)

    def watermark(self) -> int | None:
        return None

    def close(self) -> None:
        self.client.close()


class MqttTransport:
    """Publishes QoS 1 on sensorlake/<device>/up as the device (username = device id,
    password = its token); the watermark comes back, retained, on sensorlake/<device>/ack."""

    def __init__(self, url: str, device: str, token: str, protocol: str = "5",
                 client_id: str | None = None, inflight: int = 100) -> None:
        self.broker = mqtt_client.parse_broker_url(url)
        self.device = device
        self.topic = f"sensorlake/{device}/up"
        self.ack_topic = f"sensorlake/{device}/ack"
        self.connected = threading.Event()
        self.refused: str | None = None
        self.connects = 0
        self._watermark: int | None = None
        self._heard = threading.Event()
        self._connected_at: float | None = None
        self.client = mqtt_client.make_client(client_id or f"sensorlake-edge-{device}",
                                              protocol, persistent=False)
        self.client.max_inflight_messages_set(inflight)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        mqtt_client.start(self.client, self.broker, device, token, protocol, persistent=False,
                          reconnect_max=10)

    def _on_connect(self, client: Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            self.refused = f"{self.broker} refused device '{self.device}': {reason}"
            return
        self.refused = None
        self.connects += 1
        client.subscribe(self.ack_topic, 1)
        if self._connected_at is None:
            self._connected_at = time.monotonic()
        self.connected.set()

    def _on_disconnect(self, client: Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        self.connected.clear()

    def _on_message(self, client: Client, userdata: Any, msg: MQTTMessage) -> None:
        try:
            mark = int(orjson.loads(msg.payload)["watermark"])
        except (ValueError, KeyError, TypeError):
            return
        if self._watermark is None or mark > self._watermark:
            self._watermark = mark
        self._heard.set()

    def primed(self, grace: float = 2.0) -> bool:
        """Whether a fresh outbox may send: the retained watermark arrived (it tells whether
        sensorlake knows this device from an earlier life), or `grace` seconds passed since
        the subscription without one (a new device)."""
        if self._heard.is_set():
            return True
        return self._connected_at is not None and time.monotonic() - self._connected_at > grace

    def send(self, bodies: list[bytes]) -> int | None:
        if not self.connected.is_set():
            raise Unreachable(self.refused or f"not connected to {self.broker}")
        for body in bodies:
            info = self.client.publish(self.topic, body, qos=1)
            if info.rc != 0:
                raise Unreachable(f"publish to {self.broker} failed (rc {info.rc})")
        return None

    def watermark(self) -> int | None:
        return self._watermark

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def open_transport(target: str, device: str, token: str, **kwargs: Any) -> Transport:
    """HttpTransport for http(s)://, MqttTransport for mqtt(s)://."""
    scheme = urlsplit(target).scheme
    if scheme in ("http", "https"):
        return HttpTransport(target, device, token)
    if scheme in ("mqtt", "mqtts"):
        return MqttTransport(target, device, token, **kwargs)
    raise ConfigError(f"target '{target}' must be http://, https://, mqtt:// or mqtts://")
