"""The JSON envelope codec (`envelope`): the format devices, the edge agent and the demo send.

    {"device": "aq-0001", "ts": "2026-11-23T14:00:00Z" | 1763906400000, "seq": 42,
     "readings": {"pm2_5": 12.3, "pm10": 20.1}}
    {"device": "aq-0001", "batch": [{"ts": ..., "readings": {...}}, ...]}

`ts` is an ISO 8601 string (no zone = UTC) or epoch milliseconds; without it the reading is
stamped with the time ingest received it. `latitude`/`longitude` readings also set the
location of the other readings of the same entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from sensorlake.decode.base import register_codec
from sensorlake.decode.envelope_arrow import decode_wellformed
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


READINGS_MAP = pa.map_(pa.string(), pa.float64())
"""One entry's `readings` object as Arrow sees it: metric -> value."""


@dataclass
class _Entries:
    """What the per-message loop collects: one item per envelope entry (a timestamp and its
    readings object), never one per reading."""

    message: list[int] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)
    lat: list[float | None] = field(default_factory=list)
    lon: list[float | None] = field(default_factory=list)
    readings: list[dict[str, Any]] = field(default_factory=list)
    bad: list[tuple[int, str | None, Any, str]] = field(default_factory=list)


class EnvelopeCodec:
    """JSON envelopes, single or `batch` form; one log entry holds one envelope.

    Python parses each message (orjson) and checks its structure entry by entry; the
    readings objects go to Arrow whole (`READINGS_MAP`), so metric names and values are
    converted in C++, not one Python call per reading. Messages whose values are not all
    numbers take the per-reading path, which also accepts numeric strings and names each
    value that is not a number.
    """

    name = "envelope"

    def decode(self, entries: pa.Table) -> Batch:
        wellformed, rest = decode_wellformed(entries)
        found = _collect(entries, rest)
        fast, maps, slow = _split_convertible(found)
        tables = [t for t in (wellformed, _from_maps(entries, found, fast, maps),
                              _from_values(entries, found, slow)) if t is not None and t.num_rows]
        readings = WORKING_SCHEMA.empty_table() if not tables else tables[0] if len(
            tables) == 1 else pa.concat_tables(tables, promote_options="default").sort_by(
                [("_msg", "ascending"), ("_pos", "ascending")])
        rejects = _message_rejects(entries, found.bad)
        if readings.num_rows and pc.any(pc.is_null(readings.column("value"))).as_py():
            readings, value_rejects = _null_values(readings)
            rejects = pa.concat_tables([rejects, value_rejects])
        return Batch(readings.select(WORKING_SCHEMA.names).cast(WORKING_SCHEMA), rejects)


def _collect(entries: pa.Table, rows: np.ndarray) -> _Entries:
    """Parse the messages at `rows` and check them entry by entry."""
    if len(rows) == 0:
        return _Entries()
    chosen = pa.array(rows, pa.int64())
    payloads = entries.column("payload").take(chosen).to_pylist()
    devices = entries.column("device_id").to_pylist()
    received = entries.column("received_at").cast(pa.int64()).take(chosen).to_pylist()
    found = _Entries()
    texts: list[_Text] = []
    message, stamps, lats, lons, maps = (found.message, found.ts, found.lat, found.lon,
                                         found.readings)
    for index, payload, arrived in zip(rows.tolist(), payloads, received, strict=True):
        device = devices[index]
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            found.bad.append((index, None, None, f"{device or 'unknown device'}: invalid JSON "
                              f"at byte {exc.pos}: {exc.msg}"))
            continue
        try:
            batched, entries_of = _entries(doc, device)
        except EnvelopeError as exc:
            found.bad.append(_bad(index, device, exc))
            continue
        for position, entry in enumerate(entries_of):
            readings = entry.get("readings")
            ts_value = entry.get("ts")
            try:
                if type(readings) is not dict or not readings:
                    raise EnvelopeError(entry_path(batched, position) + ".readings",
                                        "expected an object of metric: value", readings)
                if ts_value is None:
                    ts = arrived
                elif type(ts_value) is str:
                    texts.append(_Text(len(stamps), batched, position, index, ts_value))
                    ts = 0
                else:
                    ts = parse_ts(ts_value, entry_path(batched, position) + ".ts")
            except EnvelopeError as exc:
                found.bad.append(_bad(index, device, exc))
                continue
            lat, lon = readings.get("latitude"), readings.get("longitude")
            located = isinstance(lat, int | float) and isinstance(lon, int | float)
            message.append(index)
            stamps.append(ts)
            lats.append(lat if located else None)
            lons.append(lon if located else None)
            maps.append(readings)
    if texts:
        _parse_text_stamps(found, texts, devices)
    return found


ISO_STRICT = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})?$"
"""Timestamps Arrow parses exactly as `datetime.fromisoformat` does (others go one by one)."""


class _Text(NamedTuple):
    """An ISO 8601 timestamp left for `_parse_text_stamps`, and where it stands."""

    stamp: int
    """Position in `_Entries.ts`."""
    batched: bool
    position: int
    """Position of the entry in its envelope."""
    message: int
    text: str


def _parse_text_stamps(found: _Entries, texts: list[_Text], devices: list[str]) -> None:
    """Fill in the ISO 8601 timestamps of `texts`: in one Arrow cast when every one is in the
    common strict form, else one by one, dropping (and rejecting) the entries that fail."""
    strings = pa.array([item.text for item in texts], pa.string())
    try:
        if not pc.all(pc.match_substring_regex(strings, ISO_STRICT)).as_py():
            raise ValueError("not all strict")
        zoned = pc.match_substring_regex(strings, r"(Z|[+-]\d{2}:\d{2})$")
        if pc.all(zoned).as_py():
            parsed = strings.cast(pa.timestamp("us", "UTC")).cast(pa.int64())
        else:
            parsed = pc.if_else(zoned, pc.if_else(zoned, strings, None).cast(
                pa.timestamp("us", "UTC")).cast(pa.int64()), pc.if_else(
                zoned, None, strings).cast(pa.timestamp("us")).cast(pa.int64()))
        stamps = np.asarray(found.ts, dtype=np.int64)
        stamps[np.fromiter((item.stamp for item in texts), np.int64, len(texts))] = \
            parsed.to_numpy()
        found.ts = stamps.tolist()
        return
    except (pa.ArrowInvalid, ValueError):
        pass
    dropped: set[int] = set()
    for item in texts:
        try:
            found.ts[item.stamp] = parse_ts(
                item.text, entry_path(item.batched, item.position) + ".ts")
        except EnvelopeError as exc:
            found.bad.append(_bad(item.message, devices[item.message], exc))
            dropped.add(item.stamp)
    if dropped:
        keep = [p for p in range(len(found.ts)) if p not in dropped]
        for name in ("message", "ts", "lat", "lon", "readings"):
            column = getattr(found, name)
            setattr(found, name, [column[p] for p in keep])


def _split_convertible(found: _Entries) -> tuple[list[int], pa.MapArray | None, list[int]]:
    """Entry positions whose readings Arrow converts to numbers as they are (with the
    converted array), and the rest."""
    try:
        return list(range(len(found.readings))), pa.array(found.readings, READINGS_MAP), []
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        pass
    by_message: dict[int, list[int]] = {}
    for position, message in enumerate(found.message):
        by_message.setdefault(message, []).append(position)
    fast: list[int] = []
    slow: list[int] = []
    for positions in by_message.values():
        try:
            pa.array([found.readings[p] for p in positions], READINGS_MAP)
            fast.extend(positions)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            slow.extend(positions)
    return fast, None, slow


def _frame(entries: pa.Table, found: _Entries, positions: pa.Array, metrics: pa.Array,
           values: pa.Array, order: pa.Array) -> pa.Table:
    """Readings from per-reading entry positions (into `found`) and their metric and value."""
    message = pa.array(found.message, pa.int64()).take(positions)
    return pa.table({
        "tenant": entries.column("tenant").take(message),
        "device_id": entries.column("device_id").take(message),
        "metric": metrics,
        "ts": pa.array(found.ts, pa.int64()).take(positions).cast(TS_TYPE),
        "value": values,
        "quality": pa.nulls(len(positions), pa.int16()).fill_null(0),
        "received_at": entries.column("received_at").take(message),
        "lat": pa.array(found.lat, pa.float64()).take(positions),
        "lon": pa.array(found.lon, pa.float64()).take(positions),
        "msg_id": entries.column("msg_id").take(message),
        "_msg": message,
        "_pos": order,
    })


def _from_maps(entries: pa.Table, found: _Entries, fast: list[int],
               maps: pa.MapArray | None) -> pa.Table:
    """The readings of the convertible entries, converted by Arrow in one call."""
    if not fast:
        return pa.table({})
    if maps is None:
        maps = pa.array([found.readings[p] for p in fast], READINGS_MAP)
    sizes = np.diff(maps.offsets.to_numpy())
    positions = pa.array(np.repeat(np.asarray(fast, dtype=np.int64), sizes))
    order = pa.array(np.arange(len(maps.keys), dtype=np.int64))
    return _frame(entries, found, positions, maps.keys, maps.items, order)


def _from_values(entries: pa.Table, found: _Entries, slow: list[int]) -> pa.Table:
    """The readings of entries with values that are not plain numbers, one by one."""
    if not slow:
        return pa.table({})
    positions: list[int] = []
    metrics: list[str] = []
    values: list[Any] = []
    for p in slow:
        readings = found.readings[p]
        positions.extend([p] * len(readings))
        metrics.extend(readings.keys())
        values.extend(readings.values())
    shown = pa.array([None if isinstance(v, int | float) else orjson.dumps(v).decode()[:80]
                      for v in values], pa.string())
    table = _frame(entries, found, pa.array(positions, pa.int64()), pa.array(metrics),
                   pa.array([_to_float(v) for v in values], pa.float64()),
                   pa.array(np.arange(len(values), dtype=np.int64)))
    return table.append_column("_shown", shown)


def _null_values(readings: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Split off the readings whose value is not a number, as rejects naming each one."""
    missing = pc.is_null(readings.column("value"))
    dropped = readings.filter(missing)
    shown = (dropped.column("_shown") if "_shown" in dropped.column_names
             else pa.nulls(dropped.num_rows, pa.string()))
    shown = pc.fill_null(shown, "null")
    rejects = pa.table({
        "msg_id": dropped.column("msg_id"), "tenant": dropped.column("tenant"),
        "device_id": dropped.column("device_id"),
        "stage": pa.repeat("decode", dropped.num_rows),
        "field": dropped.column("metric"),
        "value": shown,
        "reason": pc.binary_join_element_wise(
            dropped.column("device_id"), ": ", dropped.column("metric"), "=", shown,
            " is not a number", ""),
    }, schema=REJECT_SCHEMA)
    return readings.filter(pc.invert(missing)), rejects


def _bad(index: int, device: str, exc: EnvelopeError) -> tuple[int, str | None, Any, str]:
    shown = None if exc.value is None else orjson.dumps(exc.value)[:80].decode()
    return (index, exc.where, shown, f"{device}: {exc.where}: {exc}")


def _entries(doc: Any, device: str) -> tuple[bool, list[dict]]:
    """(batch form?, entries) of one envelope, checked against the log's device."""
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
        return False, [doc]
    if not isinstance(batch, list) or not batch:
        raise EnvelopeError("$.batch", "expected a non-empty list of entries", None)
    for position, entry in enumerate(batch):
        if type(entry) is not dict:
            raise EnvelopeError(f"$.batch[{position}]", "an entry must be a JSON object", None)
    return True, batch


def entry_path(batched: bool, position: int) -> str:
    """The JSON path of an envelope entry, for error messages."""
    return f"$.batch[{position}]" if batched else "$"


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
