"""The JSON envelope codec (`envelope`): the format devices, the edge agent and the demo send.

    {"device": "aq-0001", "ts": "2026-11-23T14:00:00Z" | 1763906400000, "seq": 42,
     "readings": {"pm2_5": 12.3, "pm10": 20.1}}
    {"device": "aq-0001", "batch": [{"ts": ..., "readings": {...}}, ...]}

`ts` is an ISO 8601 string (no zone = UTC) or epoch milliseconds; without it the reading is
stamped with the time ingest received it. `latitude`/`longitude` readings also set the
location of the other readings of the same entry.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from sensorlake.decode.base import register_codec
from sensorlake.model import TS_TYPE
from sensorlake.process.base import REJECT_SCHEMA, WORKING_SCHEMA, Batch

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class EnvelopeError(ValueError):
    """A problem in one message, with the JSON path where it is."""

    def __init__(self, where: str, message: str, value: Any = None) -> None:
        super().__init__(message)
        self.where = where
        self.value = value


def parse_ts(value: Any, where: str) -> int:
    """Microseconds since the epoch from an ISO string or epoch milliseconds."""
    if isinstance(value, bool):
        raise EnvelopeError(where, "timestamp must be an ISO 8601 string or epoch ms", value)
    if isinstance(value, int | float):
        if value != value or abs(value) > 1e16:
            raise EnvelopeError(where, "epoch milliseconds out of range", value)
        return round(value * 1000)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise EnvelopeError(where, "not an ISO 8601 timestamp "
                                "(e.g. 2026-11-23T14:00:00Z) nor epoch ms", value) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        delta = parsed - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    raise EnvelopeError(where, "timestamp must be an ISO 8601 string or epoch ms", value)


def _to_float(value: Any) -> float | None:
    """The slow path for a batch whose values are not all numbers."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


class EnvelopeCodec:
    """JSON envelopes, single or `batch` form; one log entry holds one envelope."""

    name = "envelope"

    def decode(self, entries: pa.Table) -> Batch:
        payloads = entries.column("payload").to_pylist()
        devices = entries.column("device_id").to_pylist()
        received = entries.column("received_at").cast(pa.int64()).to_pylist()

        rows_message: list[int] = []
        metrics: list[str] = []
        values: list[Any] = []
        stamps: list[int] = []
        lats: list[float | None] = []
        lons: list[float | None] = []
        bad: list[tuple[int, str | None, Any, str]] = []

        for index, payload in enumerate(payloads):
            device = devices[index]
            try:
                doc = orjson.loads(payload)
            except orjson.JSONDecodeError as exc:
                bad.append((index, None, None,
                            f"{device or 'unknown device'}: invalid JSON at byte {exc.pos}: "
                            f"{exc.msg}"))
                continue
            try:
                entries_of = _entries(doc, device)
            except EnvelopeError as exc:
                bad.append(_bad(index, device, exc))
                continue
            for path, entry in entries_of:
                try:
                    ts_value = entry.get("ts")
                    ts = received[index] if ts_value is None else parse_ts(ts_value, path + ".ts")
                    readings = entry.get("readings")
                    if not isinstance(readings, dict) or not readings:
                        raise EnvelopeError(path + ".readings",
                                            "expected an object of metric: value", readings)
                except EnvelopeError as exc:
                    bad.append(_bad(index, device, exc))
                    continue
                count = len(readings)
                lat = readings.get("latitude")
                lon = readings.get("longitude")
                located = isinstance(lat, int | float) and isinstance(lon, int | float)
                rows_message.extend([index] * count)
                metrics.extend(readings.keys())
                values.extend(readings.values())
                stamps.extend([ts] * count)
                lats.extend([lat if located else None] * count)
                lons.extend([lon if located else None] * count)
        return self._assemble(entries, rows_message, metrics, values, stamps, lats, lons, bad)

    def _assemble(self, entries: pa.Table, rows_message: list[int], metrics: list[str],
                  values: list[Any], stamps: list[int], lats: list, lons: list,
                  bad: list[tuple[int, str | None, Any, str]]) -> Batch:
        take = pa.array(rows_message, pa.int64())
        try:
            value_array = pa.array(values, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            value_array = pa.array([_to_float(v) for v in values], pa.float64())
        readings = pa.table({
            "tenant": entries.column("tenant").take(take),
            "device_id": entries.column("device_id").take(take),
            "metric": pa.array(metrics, pa.string()),
            "ts": pa.array(stamps, pa.int64()).cast(TS_TYPE),
            "value": value_array,
            "quality": pa.array([0] * len(metrics), pa.int16()) if metrics else pa.array(
                [], pa.int16()),
            "received_at": entries.column("received_at").take(take),
            "lat": pa.array(lats, pa.float64()),
            "lon": pa.array(lons, pa.float64()),
            "msg_id": entries.column("msg_id").take(take),
        })
        missing = pc.is_null(value_array)
        rejects = _message_rejects(entries, bad)
        if pc.any(missing).as_py():
            dropped = readings.filter(missing)
            originals = [values[i] for i in pc.indices_nonzero(missing).to_pylist()]
            shown = [orjson.dumps(v).decode()[:80] for v in originals]
            rejects = pa.concat_tables([rejects, pa.table({
                "msg_id": dropped.column("msg_id"), "tenant": dropped.column("tenant"),
                "device_id": dropped.column("device_id"),
                "stage": pa.repeat("decode", dropped.num_rows),
                "field": dropped.column("metric"),
                "value": pa.array(shown, pa.string()),
                "reason": pa.array([
                    f"{d}: {m}={s} is not a number"
                    for d, m, s in zip(dropped.column("device_id").to_pylist(),
                                       dropped.column("metric").to_pylist(), shown, strict=True)
                ], pa.string()),
            }, schema=REJECT_SCHEMA)])
            readings = readings.filter(pc.invert(missing))
        return Batch(readings.cast(WORKING_SCHEMA), rejects)


def _bad(index: int, device: str, exc: EnvelopeError) -> tuple[int, str | None, Any, str]:
    shown = None if exc.value is None else orjson.dumps(exc.value)[:80].decode()
    return (index, exc.where, shown, f"{device}: {exc.where}: {exc}")


def _entries(doc: Any, device: str) -> list[tuple[str, dict]]:
    """The (json path, entry) pairs of one envelope, checked against the log's device."""
    if not isinstance(doc, dict):
        raise EnvelopeError("$", "an envelope must be a JSON object", None)
    sent = doc.get("device")
    if not device:
        if sent is None:
            raise EnvelopeError("$.device", 'missing: every envelope names its "device"', None)
        raise EnvelopeError("$.device", "is not a valid device id (letters, digits and ._:- "
                            "up to 128 characters)", sent)
    if sent is not None and sent != device:
        raise EnvelopeError("$.device", f"does not match the device '{device}' it was "
                            "accepted for", sent)
    batch = doc.get("batch")
    if batch is None:
        return [("$", doc)]
    if not isinstance(batch, list) or not batch:
        raise EnvelopeError("$.batch", "expected a non-empty list of entries", None)
    out = []
    for position, entry in enumerate(batch):
        if not isinstance(entry, dict):
            raise EnvelopeError(f"$.batch[{position}]", "an entry must be a JSON object", None)
        out.append((f"$.batch[{position}]", entry))
    return out


def _message_rejects(entries: pa.Table, bad: list[tuple[int, str | None, Any, str]]) -> pa.Table:
    if not bad:
        return REJECT_SCHEMA.empty_table()
    take = pa.array([b[0] for b in bad], pa.int64())
    return pa.table({
        "msg_id": entries.column("msg_id").take(take),
        "tenant": entries.column("tenant").take(take),
        "device_id": entries.column("device_id").take(take),
        "stage": pa.repeat("decode", len(bad)),
        "field": pa.array([b[1] for b in bad], pa.string()),
        "value": pa.array([b[2] for b in bad], pa.string()),
        "reason": pa.array([b[3] for b in bad], pa.string()),
    }, schema=REJECT_SCHEMA)


register_codec(EnvelopeCodec())
