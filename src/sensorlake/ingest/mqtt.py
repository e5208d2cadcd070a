"""MQTT ingest: subscribe with QoS 1 and PUBACK a message only after the log append that
carries it has committed; then publish each device's watermark on `sensorlake/<device>/ack`.

    broker ──PUBLISH──▶ paho thread: (topic, bytes, mid) into the inbox
                        batcher thread: every batch_seconds or batch_messages
                          envelopes (device, seq, msg_id as for HTTP) ─▶ log.submit (one commit)
                          future done, in arrival order ─▶ PUBACK every mid of the group
                                                       ─▶ watermarks (retained) on .../ack

A failed append (Backpressure, a log write error) withholds the group's PUBACKs and retries
the same envelopes with backoff; nothing is dropped, and the broker stops sending once
`receive_maximum` messages are unacknowledged. After a reconnect the broker redelivers what
was not acknowledged; the log ignores message ids it already holds, so nothing is stored twice.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import random
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from paho.mqtt.client import Client
from paho.mqtt.reasoncodes import ReasonCode

from sensorlake.auth.tokens import Principal, Role
from sensorlake.config import Settings
from sensorlake.errors import AuthError
from sensorlake.ingest import mqtt_client
from sensorlake.ingest.envelopes import CODEC, parse_body
from sensorlake.ingest.mqtt_topics import Route, TopicRouter, subscribe_topic
from sensorlake.log.base import AppendResult, Envelope, Log

log = logging.getLogger(__name__)

ACK_TOPIC = "sensorlake/{device}/ack"
RETRY_MAX_SECONDS = 2.0
READ_GATHER_SECONDS = 0.001
"""paho's reader waits this long after a small read (never more than mqtt.batch_seconds)."""
REPEAT_WATERMARK_SECONDS = 1.0
"""An unchanged watermark is published again at most this often (a device that resends
after a lost ack learns it quickly; a busy device does not cost one publish per group)."""


@dataclass
class MqttCounters:
    """What MQTT ingest did since start (for status)."""

    connected: bool = False
    connects: int = 0
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    refused: int = 0
    """Messages whose topic names no valid device or whose envelope claims another device
    (kept in the log; the worker quarantines them)."""
    acked: int = 0
    groups: int = 0
    retries: int = 0
    watermarks_published: int = 0
    inflight: int = 0
    last_error: str | None = None


@dataclass
class _Group:
    """Messages appended together: their mids (with the connection they came on)."""

    mids: list[int]
    generation: int
    envelopes: list[Envelope]
    future: Future[AppendResult] | None = None
    attempts: int = 0
    retry_at: float = 0.0
    refused: int = field(default=0)


@functools.lru_cache(maxsize=4096)
def _principal(route: Route) -> Principal:
    """The ingest principal a route's messages act as (routes are cached per topic)."""
    return Principal(f"mqtt:{route.name}", Role.INGEST, route.tenant, route.device)


def _simple_envelope(route: Route, source: str, payload: bytes,
                     received_us: int) -> Envelope | None:
    """The common message, one JSON object from the topic's own device with a positive
    `seq`, as `parse_body` would make it but without its general machinery (a third of
    ingest's CPU per small message); None for anything else, which takes `parse_body`."""
    raw = payload.strip()
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(doc) is not dict:
        return None
    seq = doc.get("seq")
    device = doc.get("device", route.device)
    if type(seq) is not int or seq <= 0 or device != route.device:
        return None
    return Envelope(f"{route.tenant}/{device}/seq/{seq}", route.tenant, device, source, CODEC,
                    raw, received_us, seq)


def envelopes_of(route: Route | None, topic: str, payload: bytes,
                 received_us: int) -> tuple[list[Envelope], bool]:
    """The envelopes of one MQTT message, and whether it was refused. Refused bytes still
    go to the log under the topic's device, so the worker quarantines them with a reason."""
    source = f"mqtt:{topic}"
    if route is None or route.device is None:
        tenant = route.tenant if route else "default"
        return [Envelope(f"{tenant}/?/uuid/{uuid.uuid4().hex}", tenant, "", source,
                         route.codec if route else CODEC, payload, received_us)], True
    if route.codec != CODEC:
        digest = hashlib.blake2b(payload, digest_size=16).hexdigest()
        return [Envelope(f"{route.tenant}/{route.device}/sha/{digest}", route.tenant,
                         route.device, source, route.codec, payload, received_us)], False
    simple = _simple_envelope(route, source, payload, received_us)
    if simple is not None:
        return [simple], False
    principal = _principal(route)
    try:
        parsed = parse_body(payload, principal, received_us, source)
    except AuthError:  # the envelope claims another device than its topic
        return [Envelope(f"{route.tenant}/?/uuid/{uuid.uuid4().hex}", route.tenant,
                         route.device, source, CODEC, payload, received_us)], True
    return parsed.envelopes, bool(parsed.errors)


class MqttIngest:
    """One MQTT subscriber feeding one log. `start()`, then `stop()` (finishes and acks
    the groups in flight, then disconnects; the session stays on the broker)."""

    def __init__(self, settings: Settings, log_: Log, client_id: str | None = None) -> None:
        self.settings = settings
        self.mqtt = settings.mqtt
        if not self.mqtt.url:
            raise ValueError("mqtt.url is not set")
        self.broker = mqtt_client.parse_broker_url(self.mqtt.url)
        if self.mqtt.protocol == "5" and self.mqtt.receive_maximum < 2 * self.mqtt.batch_messages:
            log.warning("mqtt.receive_maximum (%d) is below twice mqtt.batch_messages (%d): "
                        "ingest waits for the broker between groups; raise it",
                        self.mqtt.receive_maximum, self.mqtt.batch_messages)
        self.log = log_
        self.router = TopicRouter(self.mqtt, settings.default_tenant)
        self.counters = MqttCounters()
        self.client_id = client_id or self.mqtt.client_id
        self._inbox: deque[tuple[str, bytes, int, int, int]] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._generation = 0
        self._inflight: deque[_Group] = deque()
        self._published: dict[tuple[str, str], tuple[int, float]] = {}
        self._thread: threading.Thread | None = None
        self.client: Client = mqtt_client.make_client(self.client_id, self.mqtt.protocol,
                                                      persistent=True, manual_ack=True)
        self.client.max_inflight_messages_set(1000)  # our own watermark publishes
        self.client.max_queued_messages_set(0)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.direct_publish = self._on_publish
        self.client.gather_seconds = min(READ_GATHER_SECONDS, self.mqtt.batch_seconds)

    # -- paho's network thread ---------------------------------------------------------------
    def _on_connect(self, client: Client, userdata: Any, flags: Any, reason: ReasonCode,
                    properties: Any) -> None:
        if reason.is_failure:
            self.counters.last_error = f"broker {self.broker} refused the connection: {reason}"
            log.error("%s (user %s)", self.counters.last_error, self.mqtt.username)
            return
        self._generation += 1
        self.counters.connected = True
        self.counters.connects += 1
        self.counters.last_error = None
        topics = [(subscribe_topic(sub, self.mqtt.shared_group), 1)
                  for sub in self.mqtt.subscriptions.values()]
        client.subscribe(topics)
        log.info("connected to %s as %s, subscribed to %s", self.broker, self.client_id,
                 [t for t, _ in topics])

    def _on_disconnect(self, client: Client, userdata: Any, flags: Any, reason: ReasonCode,
                       properties: Any) -> None:
        self.counters.connected = False
        if not self._stop.is_set():
            self.counters.last_error = f"disconnected from {self.broker}: {reason}"
            log.warning("%s; reconnecting", self.counters.last_error)

    def _on_publish(self, topic: str, payload: bytes, mid: int, qos: int) -> None:
        inbox = self._inbox
        inbox.append((topic, payload, mid, qos, self._generation))
        if len(inbox) == 1 or len(inbox) >= self.mqtt.batch_messages:
            self._wake.set()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        password = self.mqtt.password.get_secret_value() if self.mqtt.password else None
        if password is None and not self.broker.password:
            password = read_ingest_password(self.settings)
        props = mqtt_client.connect_properties(self.mqtt.protocol,
                                               self.mqtt.session_expiry_seconds,
                                               self.mqtt.receive_maximum)
        self._thread = threading.Thread(target=self._run, name="mqtt-ingest", daemon=True)
        self._thread.start()
        mqtt_client.start(self.client, self.broker, self.mqtt.username, password,
                          self.mqtt.protocol, self.mqtt.keepalive_seconds, True, props,
                          self.mqtt.reconnect_max_seconds)

    def stop(self, timeout: float = 15) -> None:
        """Append and acknowledge what was received, then disconnect."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.client.disconnect()
        self.client.loop_stop()

    def status(self) -> dict[str, Any]:
        self.counters.inflight = sum(len(g.mids) for g in list(self._inflight))
        return {"broker": str(self.broker), "client_id": self.client_id,
                **asdict(self.counters)}

    # -- the batcher thread ------------------------------------------------------------------
    def _run(self) -> None:
        deadline = None
        try:
            while True:
                stopping = self._stop.is_set()
                if stopping and not self._inbox and not self._inflight:
                    return
                if stopping and deadline is None:
                    deadline = time.monotonic() + 10
                if deadline is not None and time.monotonic() > deadline:
                    log.warning("stopping with %d groups unacknowledged (redelivered later)",
                                len(self._inflight))
                    return
                self._wake.wait(0.05 if self._inflight else 0.5)
                self._wake.clear()
                if self._inbox and not stopping:
                    self._gather()
                while self._inbox:
                    self._submit(self._take())
                self._settle()
        except Exception:  # pragma: no cover - a bug; the broker keeps everything unacked
            log.exception("MQTT ingest stopped on an unexpected error")
            self.counters.last_error = "MQTT ingest stopped on an unexpected error (see log)"

    def _gather(self) -> None:
        """Let a group grow for up to batch_seconds (a full batch goes at once)."""
        end = time.monotonic() + self.mqtt.batch_seconds
        while len(self._inbox) < self.mqtt.batch_messages and not self._stop.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.001))

    def _take(self) -> _Group:
        inbox, limit = self._inbox, self.mqtt.batch_messages
        now_us = time.time_ns() // 1000
        route = self.router.route
        mids: list[int] = []
        envelopes: list[Envelope] = []
        refused = 0
        generation = 0
        while inbox and len(mids) < limit:
            topic, payload, mid, qos, generation = inbox.popleft()
            found, bad = envelopes_of(route(topic), topic, payload, now_us)
            envelopes += found
            refused += bad
            if qos:
                mids.append(mid)
        self.counters.received += len(mids)
        self.counters.refused += refused
        return _Group(mids, generation, envelopes, refused=refused)

    def _submit(self, group: _Group) -> None:
        group.attempts += 1
        group.future = future = self.log.submit(group.envelopes)
        future.add_done_callback(lambda _: self._wake.set())  # runs on the log's writer
        self._inflight.append(group)

    def _settle(self) -> None:
        """PUBACK the completed groups at the head, in arrival order; retry failed ones."""
        while self._inflight:
            group = self._inflight[0]
            future = group.future
            if future is None:
                if time.monotonic() < group.retry_at:
                    return
                self._inflight.popleft()
                self._submit(group)
                self._inflight.rotate(1)  # back to the head
                continue
            if not future.done():
                return
            error = future.exception()
            if error is not None:
                self._retry(group, error)
                return
            self._inflight.popleft()
            self._acknowledge(group, future.result())

    def _retry(self, group: _Group, error: BaseException) -> None:
        """Keep the group (its PUBACKs withheld) and append it again after a pause that
        doubles from 50 ms to RETRY_MAX_SECONDS, with jitter."""
        pause = min(RETRY_MAX_SECONDS, 0.05 * 2 ** min(group.attempts - 1, 8))
        group.future, group.retry_at = None, time.monotonic() + pause * random.uniform(0.8, 1.2)
        self.counters.retries += 1
        self.counters.last_error = f"log append failed, PUBACK withheld, retrying: {error}"
        if group.attempts == 1 or group.attempts % 20 == 0:
            log.warning("%s (attempt %d)", self.counters.last_error, group.attempts)

    def _acknowledge(self, group: _Group, result: AppendResult) -> None:
        counters = self.counters
        if group.attempts > 1 and counters.connected:
            counters.last_error = None  # the log takes appends again
        counters.groups += 1
        counters.stored += result.accepted
        counters.duplicates += result.duplicates
        if group.generation == self._generation and self.counters.connected:
            mqtt_client.ack_many(self.client, group.mids)
            counters.acked += len(group.mids)
        if self.mqtt.watermarks and result.watermarks:
            self._publish_watermarks(result.watermarks)

    def _publish_watermarks(self, marks: dict[tuple[str, str], int]) -> None:
        now = time.monotonic()
        published = self._published
        for key, seq in marks.items():
            last = published.get(key)
            if last is not None and last[0] == seq and now - last[1] < REPEAT_WATERMARK_SECONDS:
                continue
            published[key] = (seq, now)
            body = orjson.dumps({"device": key[1], "watermark": seq})
            self.client.publish(ACK_TOPIC.format(device=key[1]), body, qos=1, retain=True)
            self.counters.watermarks_published += 1


def read_ingest_password(settings: Settings) -> str | None:
    """The ingest's broker password written by `sensorlake mosquitto-config`, if any."""
    path = settings.path("mqtt", "ingest.password")
    try:
        return path.read_text().strip() or None
    except OSError:
        return None
