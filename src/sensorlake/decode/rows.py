"""Helpers shared by the codecs that decode one message at a time (LoRaWAN, airrohr, ...).

A codec walks its messages in Python (that is the per-message work allowed: turning bytes
into values) and appends plain values to a `RowsBuilder`; `batch()` turns them into Arrow
columns once, taking tenant, device, msg_id and received_at from the log entries.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
import pyarrow as pa

from sensorlake.errors import DecodeError
from sensorlake.model import TS_TYPE
from sensorlake.process.base import REJECT_SCHEMA, WORKING_SCHEMA, Batch

MAX_SHOWN = 120
MAX_DEPTH = 8


def shown(value: Any) -> str:
    """A short printable form of an offending value for the quarantine."""
    if isinstance(value, bytes):
        text = value.hex()
    elif isinstance(value, str):
        text = value
    else:
        try:
            text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:
            text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "..."


def number(value: Any) -> float | None:
    """A reading value from a JSON value: numbers, booleans (1/0) and numeric strings."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def flatten(obj: Mapping[str, Any], prefix: str = "", depth: int = 0
            ) -> Iterator[tuple[str, Any]]:
    """(dotted key, leaf) pairs of a decoded object: {"a": {"b": 1}} -> ("a.b", 1)."""
    for key, value in obj.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and depth < MAX_DEPTH:
            yield from flatten(value, name, depth + 1)
        elif isinstance(value, list) and depth < MAX_DEPTH:
            yield from flatten({str(i): v for i, v in enumerate(value)}, name, depth + 1)
        else:
            yield name, value


def mapped(name: str, fields: Mapping[str, str]) -> str | None:
    """The metric for a decoded name through a device type's map; None = ignore it."""
    metric = fields.get(name, name)
    return metric or None


def message_of(exc: DecodeError) -> str:
    """A DecodeError's message without its `where` prefix."""
    text = str(exc)
    prefix = f"{exc.where}: "
    return text[len(prefix):] if exc.where and text.startswith(prefix) else text


def b64decode(text: Any, where: str) -> bytes:
    if not isinstance(text, str):
        raise DecodeError("expected a base64 string", where)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DecodeError(f"not valid base64 ({exc})", where) from None


class RowsBuilder:
    """Readings and rejects of one batch of log entries, appended as plain values."""

    def __init__(self, entries: pa.Table, codec: str) -> None:
        self.entries = entries
        self.codec = codec
        self.devices: list[str] = entries.column("device_id").to_pylist()
        self.received_us: list[int] = entries.column("received_at").cast(pa.int64()).to_pylist()
        self._index: list[int] = []
        self._metrics: list[str] = []
        self._values: list[float] = []
        self._stamps: list[int] = []
        self._lats: list[float | None] = []
        self._lons: list[float | None] = []
        self._bad: list[tuple[int, str | None, str | None, str]] = []

    def add(self, index: int, metric: str, value: float, ts_us: int,
            lat: float | None = None, lon: float | None = None) -> None:
        self._index.append(index)
        self._metrics.append(metric)
        self._values.append(value)
        self._stamps.append(ts_us)
        self._lats.append(lat)
        self._lons.append(lon)

    def count(self) -> int:
        return len(self._index)

    def reject(self, index: int, field: str | None, value: Any, message: str) -> None:
        """One reject naming the codec, the device and where in the message."""
        device = self.devices[index] or "unknown device"
        where = f"{field}: " if field else ""
        self._bad.append((index, field, None if value is None else shown(value),
                          f"{self.codec}: {device}: {where}{message}"))

    def reject_error(self, index: int, exc: DecodeError, value: Any = None) -> None:
        self.reject(index, exc.where or None, value, message_of(exc))

    def batch(self) -> Batch:
        take = pa.array(self._index, pa.int64())
        values = [v if math.isfinite(v) else float("nan") for v in self._values]
        readings = pa.table({
            "tenant": self.entries.column("tenant").take(take),
            "device_id": self.entries.column("device_id").take(take),
            "metric": pa.array(self._metrics, pa.string()),
            "ts": pa.array(self._stamps, pa.int64()).cast(TS_TYPE),
            "value": pa.array(values, pa.float64()),
            "quality": pa.array([0] * len(values), pa.int16()),
            "received_at": self.entries.column("received_at").take(take),
            "lat": pa.array(self._lats, pa.float64()),
            "lon": pa.array(self._lons, pa.float64()),
            "msg_id": self.entries.column("msg_id").take(take),
        }).cast(WORKING_SCHEMA)
        return Batch(readings, self._rejects())

    def _rejects(self) -> pa.Table:
        if not self._bad:
            return REJECT_SCHEMA.empty_table()
        take = pa.array([b[0] for b in self._bad], pa.int64())
        return pa.table({
            "msg_id": self.entries.column("msg_id").take(take),
            "tenant": self.entries.column("tenant").take(take),
            "device_id": self.entries.column("device_id").take(take),
            "stage": pa.repeat("decode", len(self._bad)),
            "field": pa.array([b[1] for b in self._bad], pa.string()),
            "value": pa.array([b[2] for b in self._bad], pa.string()),
            "reason": pa.array([b[3] for b in self._bad], pa.string()),
        }, schema=REJECT_SCHEMA)
