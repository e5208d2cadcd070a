"""Property: the envelope codec's columnar path gives exactly what a plain per-reading decoder
gives, for any mix of good and bad messages in a batch (order, values, rejects)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from sensorlake.decode import decode
from sensorlake.decode.envelope import EnvelopeError, _entries, entry_path, parse_ts
from sensorlake.log.base import LOG_ENTRY_SCHEMA
from sensorlake.model import TS_TYPE

RECEIVED_US = 1_795_435_200_000_000

values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64), st.integers(-10**6, 10**6),
    st.booleans(), st.none(), st.sampled_from(["12.5", "abc", ""]),
    st.just({"nested": 1}), st.just([1, 2]))
metric = st.sampled_from(["pm2_5", "pm10", "temperature", "latitude", "longitude", "x"])
readings = st.dictionaries(metric, values, max_size=4)
stamps = st.one_of(st.none(), st.integers(0, 2 * 10**12), st.sampled_from(
    ["2026-11-23T14:00:00Z", "2026-11-23 14:00:00.5+01:00", "2026-11-23T14:00:00.25-05:30",
     "2026-11-23T14:00:00", "2026-13-23T14:00:00Z", "not a time", ""]), st.booleans())
entry = st.fixed_dictionaries({"readings": readings}, optional={"ts": stamps})
envelope = st.one_of(
    st.builds(lambda e, d: {**e, "device": d}, entry, st.sampled_from(["d1", "d2"])),
    st.builds(lambda es: {"device": "d1", "batch": es}, st.lists(entry, max_size=3)),
    st.just([1]), st.just("text"))
message = st.one_of(envelope.map(orjson.dumps), st.sampled_from([
    b"{bad", b"", b"\xff", b'{"device": "d1", "readings": {"pm10": 100000000000000000000000}}']))


def log_entries(payloads: list[bytes], devices: list[str]) -> pa.Table:
    n = len(payloads)
    return pa.table({
        "offset": pa.array(range(1, n + 1), pa.int64()), "msg_id": [f"m{i}" for i in range(n)],
        "tenant": ["t1"] * n, "device_id": devices, "source": ["test"] * n,
        "codec": ["envelope"] * n,
        "received_at": pa.array([RECEIVED_US] * n, pa.int64()).cast(TS_TYPE),
        "seq": pa.nulls(n, pa.int64()), "payload": pa.array(payloads, pa.binary()),
    }, schema=LOG_ENTRY_SCHEMA)


def micros(at: datetime) -> int:
    return (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def reference(payload: bytes, device: str) -> tuple[list[tuple[Any, ...]], int]:
    """Readings (metric, value, ts_us, lat, lon) and the number of rejects of one message,
    decoded one reading at a time."""
    try:
        doc = orjson.loads(payload)
        batched, items = _entries(doc, device)
    except (orjson.JSONDecodeError, EnvelopeError):
        return [], 1
    rows, rejects = [], 0
    for position, item in enumerate(items):
        path = entry_path(batched, position)
        try:
            ts = RECEIVED_US if item.get("ts") is None else parse_ts(item["ts"], path)
            found = item.get("readings")
            if not isinstance(found, dict) or not found:
                raise EnvelopeError(path, "empty")
        except EnvelopeError:
            rejects += 1
            continue
        lat, lon = found.get("latitude"), found.get("longitude")
        located = isinstance(lat, int | float) and isinstance(lon, int | float)
        for name, value in found.items():
            number = value
            if isinstance(value, str):
                try:
                    number = float(value)
                except ValueError:
                    number = None
            elif not isinstance(value, int | float) or isinstance(value, dict | list):
                number = None
            if number is None:
                rejects += 1
                continue
            rows.append((name, float(number), ts, float(lat) if located else None,
                         float(lon) if located else None))
    return rows, rejects


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(message, st.sampled_from(["d1", "d2", ""])), min_size=1,
                max_size=8))
def test_columnar_decode_equals_per_reading_decode(batch: list[tuple[bytes, str]]) -> None:
    got = decode(log_entries([p for p, _ in batch], [d for _, d in batch]))
    expected_rows: list[tuple[Any, ...]] = []
    expected_rejects = 0
    for payload, device in batch:
        rows, rejects = reference(payload, device)
        expected_rows += rows
        expected_rejects += rejects
    assert [(r["metric"], r["value"], micros(r["ts"]), r["lat"], r["lon"])
            for r in got.readings.to_pylist()] == expected_rows
    assert got.rejects.num_rows == expected_rejects
    assert all(reason for reason in got.rejects.column("reason").to_pylist())


def test_wellformed_messages_take_the_arrow_path_and_the_rest_do_not() -> None:
    """The C++ path takes the plain messages and leaves exactly the suspect ones (explicit
    null, another device, pretty-printed, a non-strict timestamp) to the per-message path;
    together they give what the per-message reference gives."""
    from sensorlake.decode.envelope_arrow import decode_wellformed

    plain = [{"device": "d1", "seq": 1, "ts": "2026-11-23T14:00:00.250+01:00",
              "readings": {"pm2_5": 1.5, "pm10": 3, "latitude": 52.1, "longitude": 5.1}},
             {"device": "d1", "batch": [{"ts": 1795435200000, "readings": {"pm2_5": 2}},
                                        {"readings": {"temperature": -1.25}}]},
             {"readings": {"humidity": True}}]
    payloads = [orjson.dumps(d) for d in plain] + [
        b'{"device": "d1", "readings": {"pm2_5": null, "pm10": 1}}',
        b'{"device": "d2", "readings": {"pm2_5": 1}}',
        b'{\n  "device": "d1",\n  "readings": {"pm2_5": 4}\n}',
        b'{"device": "d1", "ts": "2026-11-23 14:00:00", "readings": {"pm2_5": 5}}']
    table = log_entries(payloads, ["d1"] * len(payloads))
    fast, rest = decode_wellformed(table)
    assert fast is not None and rest.tolist() == [3, 4, 5, 6]
    assert sorted(set(fast.column("_msg").to_pylist())) == [0, 1, 2]
    got = decode(table)
    expected = [row for p in payloads for row in reference(p, "d1")[0]]
    assert [(r["metric"], r["value"], micros(r["ts"]), r["lat"], r["lon"])
            for r in got.readings.to_pylist()] == expected
    assert got.rejects.num_rows == sum(reference(p, "d1")[1] for p in payloads)


plain_value = st.one_of(st.floats(allow_nan=False, allow_infinity=False, width=64),
                        st.integers(-10**9, 10**9))
plain_entry = st.fixed_dictionaries(
    {"readings": st.dictionaries(metric, plain_value, min_size=1, max_size=4)},
    optional={"ts": st.one_of(st.integers(0, 2 * 10**12), st.sampled_from(
        ["2026-11-23T14:00:00Z", "2026-11-23T14:00:00.5+01:00", "2026-11-23T14:00:00"]))})
plain_envelope = st.one_of(
    plain_entry.map(lambda e: {**e, "device": "d1"}),
    st.lists(plain_entry, min_size=1, max_size=4).map(lambda es: {"device": "d1",
                                                                  "batch": es}))


@settings(max_examples=150, deadline=None)
@given(st.lists(plain_envelope, min_size=1, max_size=8))
def test_arrow_path_equals_per_reading_decode(docs: list[dict]) -> None:
    """Property over well-formed batches (the C++ path's ground): same readings, and the
    same first value for every reading key (what dedup keeps)."""
    payloads = [orjson.dumps(d) for d in docs]
    got = decode(log_entries(payloads, ["d1"] * len(payloads)))
    rows = [(r["msg_id"], r["metric"], r["value"], micros(r["ts"]), r["lat"], r["lon"])
            for r in got.readings.to_pylist()]
    expected = [(f"m{i}", *row) for i, p in enumerate(payloads) for row in reference(p, "d1")[0]]
    assert sorted(rows, key=repr) == sorted(expected, key=repr)
    first_got: dict[tuple, float] = {}
    first_expected: dict[tuple, float] = {}
    for found, first in ((rows, first_got), (expected, first_expected)):
        for _, name, value, ts, *_ in found:
            first.setdefault((name, ts), value)
    assert first_got == first_expected
    assert got.rejects.num_rows == 0
