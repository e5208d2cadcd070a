"""MQTT packet bytes: the variable-length integer, and the few packets that the ingest
client's bulk reader, its tests and the benchmark's lean publisher write or read by hand
(MQTT 3.1.1 and 5 share these layouts)."""

from __future__ import annotations

import struct


def varint(value: int) -> bytes:
    """`value` as an MQTT variable byte integer (7 bits a byte, low first)."""
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


def read_varint(buf: bytes, at: int, end: int) -> tuple[int, int] | None:
    """(value, position after it) of the variable byte integer at `at`; None when it runs
    past `end` or over 4 bytes (not all here yet, or malformed)."""
    value = shift = 0
    pos = at
    while pos < end and pos - at < 4:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos
    return None


def _string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("!H", len(raw)) + raw


def connect_packet(client_id: str, username: str, password: str, keepalive: int = 60) -> bytes:
    """CONNECT, MQTT 3.1.1, clean session, with username and password."""
    flags = 0x80 | 0x40 | 0x02
    body = (_string("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
            + _string(client_id) + _string(username) + _string(password))
    return b"\x10" + varint(len(body)) + body


def publish_packet(topic: str, payload: bytes, qos: int = 1, mid: int = 0,
                   properties: bytes | None = None) -> bytes:
    """PUBLISH of QoS 0 or 1; `properties` (MQTT 5) are written with their length."""
    body = _string(topic)
    if qos:
        body += struct.pack("!H", mid)
    if properties is not None:
        body += varint(len(properties)) + properties
    return bytes([0x30 | qos << 1]) + varint(len(body) + len(payload)) + body + payload


def split_publish(buf: bytes | bytearray, start: int, end: int, qos: int, v5: bool,
                  ) -> tuple[str, int, int] | None:
    """The variable header of the PUBLISH body in buf[start:end]: (topic, packet id, where
    the payload starts); MQTT 5 properties are skipped. None when malformed."""
    if end - start < 2:
        return None
    at = start + 2 + (buf[start] << 8 | buf[start + 1])
    if at + 2 * qos > end:
        return None
    topic = bytes(buf[start + 2:at])
    mid = 0
    if qos:
        mid = buf[at] << 8 | buf[at + 1]
        at += 2
    if v5:
        props = read_varint(buf, at, end)
        if props is None:
            return None
        at = props[1] + props[0]
    if at > end:
        return None
    try:
        return topic.decode("utf-8"), mid, at
    except UnicodeDecodeError:
        return topic.decode("utf-8", "replace"), mid, at
