"""The envelope codec's C++ path: well-formed envelopes parsed by Arrow's JSON reader.

Most batches hold nothing but well-formed envelopes with numeric values. For those, parsing
every message into Python objects (and converting them back) costs more than the rest of
the worker together. Here the payloads go to `pyarrow.json` as one NDJSON buffer; the
readings come out as struct columns (one field per metric), become a dense entries x
metrics matrix, and the present values are taken out in entry order. No Python runs per
message or per reading, and the GIL is free meanwhile.

Only what this path decodes exactly as the per-message path does stays here. A message goes
to the per-message path (`envelope.py`), which also writes the precise rejects, when:
- its bytes contain a newline, `null`, `NaN` or `Infinity` (pretty-printed JSON, explicit
  nulls: Arrow cannot tell a null from an absent key), or it is not one JSON object;
- it names another device than the one ingest accepted it for, or none was accepted;
- its readings object is empty or missing, its batch list empty, or an entry is not an
  object; a timestamp is neither an integer (epoch ms) nor an ISO 8601 string in the
  common strict form.
Whenever Arrow refuses the buffer as a whole (a value that changes type between messages, a
duplicate key, invalid UTF-8), the whole batch takes the per-message path: slower, same result.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from sensorlake.model import TS_TYPE

SUSPECT = (b"\n", b"\r", b"null", b"NaN", b"Infinity")
"""Bytes that send a message to the per-message path (see the module docstring)."""
ISO_STRICT = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})?$"
EPOCH_MS_LIMIT = 10**14
"""The largest epoch-ms timestamp accepted (as in `envelope.parse_ts`)."""
NUMERIC = (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean, pa.types.is_null)
READ_OPTIONS = pajson.ReadOptions(block_size=1 << 26)


class _Refused(Exception):
    """Arrow cannot decode these messages exactly: let the per-message path do it."""


def decode_wellformed(entries: pa.Table) -> tuple[pa.Table | None, np.ndarray]:
    """Readings of the messages this path decodes (WORKING_SCHEMA columns plus `_msg`, the
    message's row in `entries`, and `_pos`, the order within it), and the rows of `entries`
    left for the per-message path."""
    everything = np.arange(entries.num_rows)
    payloads = entries.column("payload").to_pylist()
    suspect = _suspects(payloads)
    suspect |= pc.equal(entries.column("device_id"), "").to_numpy(zero_copy_only=False)
    candidates = np.flatnonzero(~suspect)
    if len(candidates) == 0:
        return None, everything
    chosen_payloads = payloads if len(candidates) == len(payloads) else [
        payloads[i] for i in candidates.tolist()]
    try:
        readings, good = _decode(entries.take(pa.array(candidates)), chosen_payloads)
    except (_Refused, pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError,
            UnicodeDecodeError):
        return None, everything
    chosen = candidates[good]
    rows = readings.column("_msg").to_numpy()
    readings = readings.set_column(readings.schema.get_field_index("_msg"), "_msg",
                                   pa.array(candidates[rows], pa.int64()))
    return readings, np.setdiff1d(everything, chosen, assume_unique=True)


def _suspects(payloads: list[bytes]) -> np.ndarray:
    """True for each payload containing one of SUSPECT, found by a few scans of the whole
    batch at once (most batches contain none)."""
    suspect = np.zeros(len(payloads), dtype=bool)
    joined = b"\x00".join(payloads)
    starts: np.ndarray | None = None
    for pattern in SUSPECT:
        at = joined.find(pattern)
        if at < 0:
            continue
        if starts is None:
            sizes = np.fromiter((len(p) + 1 for p in payloads), np.int64, len(payloads))
            starts = np.cumsum(sizes) - sizes
        while at >= 0:
            row = int(np.searchsorted(starts, at, side="right")) - 1
            suspect[row] = True
            at = joined.find(pattern, int(starts[row + 1]) if row + 1 < len(starts) else len(
                joined))
    return suspect


def _decode(part: pa.Table, payloads: list[bytes]) -> tuple[pa.Table, np.ndarray]:
    """(readings, rows of `part` they cover) for a table of candidate messages."""
    buffer = b"\n".join(payloads)
    docs = pajson.read_json(io.BytesIO(buffer), read_options=READ_OPTIONS)
    if docs.num_rows != part.num_rows:  # two objects on one line, or none
        raise _Refused("messages and JSON objects do not match up")
    count = part.num_rows
    bad = np.zeros(count, dtype=bool)
    if "device" in docs.column_names:
        sent = docs.column("device")
        if not (pa.types.is_string(sent.type) or pa.types.is_null(sent.type)):
            raise _Refused("device is not a string")
        bad |= pc.fill_null(pc.not_equal(sent, part.column("device_id")), False).to_numpy(
            zero_copy_only=False)
    groups = []
    batch = docs.column("batch").combine_chunks() if "batch" in docs.column_names else None
    single = np.ones(count, dtype=bool) if batch is None else ~batch.is_valid().to_numpy(
        zero_copy_only=False)
    if single.any():
        groups.append(_single_entries(docs, np.flatnonzero(single)))
    if batch is not None and (~single).any():
        groups.append(_batch_entries(batch, np.flatnonzero(~single)))
    for group in groups:
        bad[group.message[group.bad]] = True
    good_messages = np.flatnonzero(~bad)
    tables = [g.rows(part, ~bad) for g in groups]
    table = pa.concat_tables([t for t in tables if t.num_rows] or tables[:1])
    if len(groups) > 1:
        table = table.sort_by([("_msg", "ascending"), ("_pos", "ascending")])
    return table, good_messages


class _EntryGroup:
    """Envelope entries of one shape (single or batch form): per entry its message, its
    position in the envelope, its timestamp and its readings struct."""

    def __init__(self, message: np.ndarray, position: np.ndarray, ts: pa.Array | None,
                 readings: pa.Array | None) -> None:
        self.message, self.position = message, position
        self.bad = np.zeros(len(message), dtype=bool)
        if readings is None or not pa.types.is_struct(readings.type):
            raise _Refused("readings is not an object")
        fields = [readings.type.field(i) for i in range(readings.type.num_fields)]
        if not all(any(check(f.type) for check in NUMERIC) for f in fields):
            raise _Refused("a reading is not a number")
        self.names = pa.array([f.name for f in fields], pa.string())
        present = readings.is_valid().to_numpy(zero_copy_only=False)
        self.values = (np.column_stack([
            child.cast(pa.float64()).to_numpy(zero_copy_only=False)
            for child in readings.flatten()]) if fields
            else np.empty((len(message), 0), dtype=np.float64))
        has_value = ~np.isnan(self.values)
        self.bad |= ~present | ~has_value.any(axis=1)
        self.stamped = np.zeros(len(message), dtype=bool)
        self.ts_us = self._timestamps(ts)
        self.lat, self.lon = self._location([f.name for f in fields])

    def _timestamps(self, ts: pa.Array | None) -> np.ndarray:
        """µs per entry where it has a `ts` (`self.stamped`); the rest get the received time."""
        out = np.zeros(len(self.message), dtype=np.int64)
        if ts is None or pa.types.is_null(ts.type):
            return out
        given = ts.is_valid().to_numpy(zero_copy_only=False)
        self.stamped = given
        if pa.types.is_integer(ts.type):
            ms = pc.fill_null(ts, 0).cast(pa.int64()).to_numpy()
            self.bad |= given & (np.abs(ms) > EPOCH_MS_LIMIT)
            out[given] = ms[given] * 1000
            return out
        if not pa.types.is_string(ts.type):
            self.bad |= given
            return out
        strict = pc.fill_null(pc.match_substring_regex(ts, ISO_STRICT), False).to_numpy(
            zero_copy_only=False)
        self.bad |= given & ~strict
        usable = given & strict
        if usable.any():
            text = ts.filter(pa.array(usable))
            if pc.all(pc.ends_with(text, "Z")).as_py():
                parsed = text.cast(pa.timestamp("us", "UTC")).cast(pa.int64())
            else:
                zoned = pc.match_substring_regex(text, r"(Z|[+-]\d{2}:\d{2})$")
                parsed = pc.if_else(zoned, pc.if_else(zoned, text, None).cast(
                    pa.timestamp("us", "UTC")).cast(pa.int64()), pc.if_else(
                    zoned, None, text).cast(pa.timestamp("us")).cast(pa.int64()))
            out[usable] = parsed.to_numpy(zero_copy_only=False)
        return out

    def _location(self, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The entry's GPS fix (NaN when it has none), as the per-message path sets it."""
        nan = np.full(len(self.message), np.nan)
        if "latitude" not in names or "longitude" not in names:
            return nan, nan
        lat = self.values[:, names.index("latitude")]
        lon = self.values[:, names.index("longitude")]
        located = ~np.isnan(lat) & ~np.isnan(lon)
        return np.where(located, lat, np.nan), np.where(located, lon, np.nan)

    def rows(self, part: pa.Table, good_message: np.ndarray) -> pa.Table:
        """One row per present value of the good messages' entries, in entry order."""
        keep = good_message[self.message]
        values = self.values[keep]
        entry, field = np.nonzero(~np.isnan(values))
        kept = np.flatnonzero(keep)[entry]
        message = pa.array(self.message[kept], pa.int64())
        ts = self.ts_us[kept]
        received = part.column("received_at").cast(pa.int64()).take(message).to_numpy()
        lat, lon = self.lat[kept], self.lon[kept]
        return pa.table({
            "tenant": part.column("tenant").take(message),
            "device_id": part.column("device_id").take(message),
            "metric": self.names.take(pa.array(field, pa.int64())),
            "ts": pa.array(np.where(self.stamped[kept], ts, received), pa.int64()).cast(TS_TYPE),
            "value": pa.array(values[entry, field], pa.float64()),
            "quality": pa.array(np.zeros(len(kept), dtype=np.int16)),
            "received_at": part.column("received_at").take(message),
            "lat": pa.array(lat, pa.float64(), from_pandas=True),
            "lon": pa.array(lon, pa.float64(), from_pandas=True),
            "msg_id": part.column("msg_id").take(message),
            "_msg": message,
            "_pos": pa.array(self.position[kept] * 4096 + field, pa.int64()),
        })


def _single_entries(docs: pa.Table, rows: np.ndarray) -> _EntryGroup:
    index = pa.array(rows, pa.int64())
    ts = docs.column("ts").take(index).combine_chunks() if "ts" in docs.column_names else None
    readings = (docs.column("readings").take(index).combine_chunks()
                if "readings" in docs.column_names else None)
    return _EntryGroup(rows, np.zeros(len(rows), dtype=np.int64), ts, readings)


def _batch_entries(batch: pa.Array, rows: np.ndarray) -> _EntryGroup:
    lists = batch.take(pa.array(rows, pa.int64()))
    if not pa.types.is_list(lists.type) or not pa.types.is_struct(lists.type.value_type):
        raise _Refused("batch is not a list of objects")
    sizes = np.diff(lists.offsets.to_numpy())
    flat = lists.flatten()
    message = np.repeat(rows, sizes)
    starts = np.repeat(np.cumsum(sizes) - sizes, sizes)
    position = np.arange(len(flat)) - starts
    names = [lists.type.value_type.field(i).name
             for i in range(lists.type.value_type.num_fields)]
    children = dict(zip(names, flat.flatten(), strict=True))
    group = _EntryGroup(message, position, children.get("ts"), children.get("readings"))
    group.bad |= ~flat.is_valid().to_numpy(zero_copy_only=False)
    empty = rows[sizes == 0]
    if len(empty):  # an empty batch list: no entry carries the message to the slow path
        group.message = np.concatenate([group.message, empty])
        group.bad = np.concatenate([group.bad, np.ones(len(empty), dtype=bool)])
        group.position = np.concatenate([group.position, np.zeros(len(empty), np.int64)])
        group.values = np.vstack([group.values, np.full((len(empty),
                                                         group.values.shape[1]), np.nan)])
        group.ts_us = np.concatenate([group.ts_us, np.zeros(len(empty), np.int64)])
        group.stamped = np.concatenate([group.stamped, np.zeros(len(empty), dtype=bool)])
        group.lat = np.concatenate([group.lat, np.full(len(empty), np.nan)])
        group.lon = np.concatenate([group.lon, np.full(len(empty), np.nan)])
    return group
