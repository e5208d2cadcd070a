"""InfluxDB line protocol (`line_protocol`, and `_us`, `_ms`, `_s` for the other precisions).

One log entry holds lines of one device, or, with device id `*` (MANY_DEVICES), lines of
many devices that each name their own with the device tag (ingest grouped and checked them;
see ingest/lineprotocol.py). Every field of every point becomes a reading:
named `fields[measurement.field]`, else `fields[field]`, else the field key
(`[line_protocol] fields`; "" drops it); numbers and booleans (1/0) become values, a string
only when it holds a number; the timestamp, in the codec's precision, else the arrival time.

Two paths produce the same result (tests/sources prove it on generated lines):
- vectorized (polars): lines with no backslash and no quote - what Telegraf and the client
  libraries send for numeric data - split into sections, fields and values with string
  kernels, a few array operations per batch;
- precise (`lp_grammar.parse_line`, one Python call per line): everything else, and every
  line the vectorized path cannot finish (out-of-range values), with the exact error.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from sensorlake.config import LineProtocolSettings
from sensorlake.decode.base import register_codec
from sensorlake.decode.context import codec_context
from sensorlake.decode.lp_grammar import (
    FALSE,
    INT64_MAX,
    SIMPLE_POINT_RE,
    SKIP_RE,
    TRUE,
    LineSyntaxError,
    LineValueError,
    field_value,
    parse_line,
    tag_value_re,
    timestamp_ns,
)
from sensorlake.decode.rows import number, shown
from sensorlake.model import TS_TYPE
from sensorlake.process.base import REJECT_SCHEMA, WORKING_SCHEMA, Batch
from sensorlake.registry import DEVICE_ID_PATTERN

PRECISIONS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
CODEC_NAMES = {"ns": "line_protocol", "us": "line_protocol_us", "ms": "line_protocol_ms",
               "s": "line_protocol_s"}
MANY_DEVICES = "*"
"""device_id of a log entry whose lines name their own devices (never a valid device id)."""
FIELDS_SCHEMA = {"entry": pl.Int64, "line_no": pl.Int64, "device": pl.String,
                 "measurement": pl.String,
                 "field": pl.String, "value": pl.Float64, "text": pl.String,
                 "ts_ns": pl.Int64}


def line_devices(lines: pl.Series, device_tag: str, fallback_tag: str,
                 simple: bool | None = None) -> pl.Series:
    """The device tag of each line, else its fallback tag (as written), else null. A simple
    line (no backslash, no quote) has no space before its fields, which bounds the search to
    the measurement-and-tags section; `simple=None` finds out."""
    if simple is None:
        simple = not lines.str.contains(r'[\\"]').fill_null(False).any()

    def value(tag: str) -> pl.Series:
        pattern = (rf"^ *[^ ]*?,{re.escape(tag)}=([^ ,]+)" if simple
                   else tag_value_re(tag))
        return lines.str.extract(pattern, 1)

    named = value(device_tag)
    if named.null_count():
        named = named.fill_null(value(fallback_tag))
    return named


def named_devices(entries: pa.Table, settings: LineProtocolSettings) -> set[tuple[str, str]]:
    """(tenant, device) of every valid device id that the lines of MANY_DEVICES entries
    name (the worker registers the unknown ones before decoding)."""
    mine = entries.filter(pc.equal(entries.column("device_id"), MANY_DEVICES))
    if mine.num_rows == 0:
        return set()
    lines = split_lines(mine.column("payload").combine_chunks(),
                        mine.column("device_id").to_pylist())
    tenants = pl.Series(mine.column("tenant").to_pylist(), dtype=pl.String)
    named = pl.DataFrame({
        "tenant": tenants.gather(lines["entry"]),
        "device": line_devices(lines["line"], settings.device_tag, settings.fallback_tag),
    }).filter(pl.col("device").str.contains(DEVICE_ID_PATTERN)).unique()
    return set(named.iter_rows())


def split_lines(payloads: pa.Array, devices: list[str]) -> pl.DataFrame:
    """(entry, line_no, line, utf8, device, attributed, single) for every line of every
    payload, without its \\r; `devices` are the entries' device ids ("" for none)."""
    lists = pc.split_pattern(payloads, b"\n")
    entry = pc.list_parent_indices(lists).to_numpy()
    flat = pc.list_flatten(lists)
    offsets = lists.offsets.to_numpy()[:-1]
    line_no = np.arange(len(flat), dtype=np.int64) - offsets[entry] + 1
    try:
        text = flat.cast(pa.string())
        valid = pa.repeat(True, len(flat))
    except pa.ArrowInvalid:
        decoded = [_utf8(b) for b in flat.to_pylist()]
        text = pa.array([d if d is not None else "" for d in decoded], pa.string())
        valid = pa.array([d is not None for d in decoded], pa.bool_())
    per_entry = np.diff(lists.offsets.to_numpy())
    entry = entry.astype(np.int64)
    device = pl.Series(devices, dtype=pl.String).gather(entry)
    frame = pl.DataFrame({"entry": entry, "line_no": line_no,
                          "line": pl.Series(text), "utf8": pl.Series(valid),
                          "device": device, "attributed": device != "",
                          "single": per_entry[entry] == 1})
    return frame.with_columns(pl.col("line").str.strip_suffix("\r"))


def _first_tag(tags: list[tuple[str, str]], name: str, fallback: str) -> str | None:
    """The first value of tag `name`, else of `fallback`, as ingest's line_devices reads."""
    for wanted in (name, fallback):
        for key, value in tags:
            if key == wanted:
                return value
    return None


def _at(where: str, message: str) -> str:
    return f"{where}, {message}" if where and message.startswith("byte") else (
        f"{where}: {message}" if where else message)


def _utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def vectorized_fields(lines: pl.DataFrame, ns_per_unit: int, measurement: bool = True
                      ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(fields, unfinished) of lines that match SIMPLE_POINT_RE: the fields, and the
    (entry, line_no) of lines left to the precise path because a value or the timestamp is
    out of range. Sections are split on spaces (a simple line has no escaped or quoted one);
    `measurement=False` skips extracting it (no `measurement.field` mapping to apply)."""
    text = pl.col("line").str.strip_chars(" ")
    if lines["line"].str.contains("  ", literal=True).any():
        text = text.str.replace_all(" +", " ")
    parts = lines.select("entry", "line_no", "device",
                         text.str.split_exact(" ", 2).struct.rename_fields(
        ["key", "fields", "ts"]).alias("p")).unnest("p")
    name = (pl.col("key").str.splitn(",", 2).struct.field("field_0") if measurement
            else pl.lit(None, pl.String))
    parts = parts.with_columns(name.alias("measurement"),
                               pl.col("ts").cast(pl.Int64, strict=False).alias("ts_int"))
    fields = parts.select(
        "entry", "line_no", "device", "measurement", "ts", "ts_int",
        pl.col("fields").str.split(",").alias("pair")).explode("pair")
    fields = fields.with_columns(
        pl.col("pair").str.splitn("=", 2).struct.rename_fields(["field", "raw"])
    ).unnest("pair")
    raw = pl.col("raw")
    value = (pl.when(raw.str.ends_with("i"))
             .then(raw.str.strip_suffix("i").cast(pl.Int64, strict=False).cast(pl.Float64))
             .when(raw.str.ends_with("u"))
             .then(raw.str.strip_suffix("u").cast(pl.UInt64, strict=False).cast(pl.Float64))
             .when(raw.is_in(sorted(TRUE))).then(pl.lit(1.0))
             .when(raw.is_in(sorted(FALSE))).then(pl.lit(0.0))
             .otherwise(raw.cast(pl.Float64, strict=False)))
    low, high = -((INT64_MAX + 1) // ns_per_unit), INT64_MAX // ns_per_unit
    ts_ok = pl.col("ts").is_null() | (pl.col("ts_int").is_not_null()
                                      & pl.col("ts_int").is_between(low, high))
    fields = fields.with_columns(value.alias("value"), ts_ok.alias("ts_ok"))
    unfinished = pl.col("value").is_null() | pl.col("value").is_infinite() | ~pl.col("ts_ok")
    bad = fields.filter(unfinished).select("entry", "line_no").unique()
    good = fields.join(bad, on=["entry", "line_no"], how="anti") if bad.height else fields
    out = good.select("entry", "line_no", "device", "measurement", "field", "value",
                      pl.lit(None, pl.String).alias("text"),
                      (pl.col("ts_int") * ns_per_unit).alias("ts_ns"))
    return out, bad


class LineProtocolCodec:
    def __init__(self, precision: str) -> None:
        self.name = CODEC_NAMES[precision]
        self.ns_per_unit = PRECISIONS[precision]

    def decode(self, entries: pa.Table, vectorize: bool = True) -> Batch:
        """`vectorize=False` sends every line through the precise parser (tests)."""
        settings = codec_context().settings.line_protocol
        if entries.num_rows == 0:
            return Batch()
        devices = entries.column("device_id").to_pylist()
        lines = split_lines(entries.column("payload").combine_chunks(), devices)
        lines = lines.filter(~(pl.col("utf8") & pl.col("line").str.contains(SKIP_RE)))
        if MANY_DEVICES in devices:
            lines = self._name_devices(lines, settings)
        simple = (pl.col("utf8") & pl.col("attributed")
                  & ~pl.col("line").str.contains(r'[\\"]')
                  & pl.col("line").str.contains(SIMPLE_POINT_RE))
        if not vectorize:
            simple = pl.lit(False)
        lines = lines.with_columns(simple.alias("simple"))
        qualified = any("." in key for key in settings.fields)
        fast, unfinished = vectorized_fields(lines.filter("simple"), self.ns_per_unit,
                                             measurement=qualified)
        slow = pl.concat([lines.filter(~pl.col("simple")),
                          lines.join(unfinished, on=["entry", "line_no"], how="semi")])
        rows, rejects = self._precise(slow, devices, settings)
        fields = pl.concat([fast, pl.DataFrame(rows, schema=FIELDS_SCHEMA, orient="row")])
        return self._assemble(entries, fields, rejects, settings)

    @staticmethod
    def _name_devices(lines: pl.DataFrame, settings: LineProtocolSettings) -> pl.DataFrame:
        """The device of each line of a MANY_DEVICES entry, from its tag; a line whose tag
        is missing, not a valid id or not simple is left to the precise path (`attributed`
        false), which parses its tags and says what is wrong."""
        at = (lines["device"] == MANY_DEVICES).arg_true()
        many = lines["line"].gather(at)
        named = line_devices(many, settings.device_tag, settings.fallback_tag, simple=True)
        ok = (named.str.contains(DEVICE_ID_PATTERN).fill_null(False)
              & ~many.str.contains(r'[\\"]').fill_null(True))
        device = lines["device"].clone().scatter(at.filter(ok), named.filter(ok))
        attributed = lines["attributed"].clone().scatter(at.filter(~ok), False)
        return lines.with_columns(device=device, attributed=attributed)

    def _precise(self, lines: pl.DataFrame, devices: list[str],
                 settings: LineProtocolSettings) -> tuple[list[tuple], list[tuple]]:
        rows: list[tuple] = []
        rejects: list[tuple[int, str | None, Any, str, str]] = []
        for entry, line_no, line, utf8, single in lines.select(
                "entry", "line_no", "line", "utf8", "single").iter_rows():
            where = "" if single else f"line {line_no}"
            device = devices[entry]
            known = "" if device == MANY_DEVICES else device  # until the tags name one
            if not utf8:
                rejects.append((entry, where or None, None, _at(where, "not valid UTF-8"),
                                known))
                continue
            try:
                point = parse_line(line)
            except LineSyntaxError as exc:
                rejects.append((entry, where or None, line,
                                _at(where, f"byte {exc.offset}: {exc}"), known))
                continue
            if point is None:
                continue
            if not known:
                named = _first_tag(point.tags, settings.device_tag,
                                   settings.fallback_tag)
                if device and named and re.match(DEVICE_ID_PATTERN, named):
                    device = named
                else:
                    reason = (f"tag value '{named}' is not a valid device id (letters, "
                              "digits, ._:- up to 128)" if named else
                              f"no device: tag the line with {settings.device_tag}=<id> (or "
                              f"{settings.fallback_tag}=), or send it with a token bound to "
                              "a device")
                    rejects.append((entry, where or None, line, _at(where, reason), ""))
                    continue
            try:
                ts = None if point.timestamp is None else timestamp_ns(point.timestamp,
                                                                       self.ns_per_unit)
                values = [(key, field_value(kind, text)) for key, kind, text in point.fields]
            except LineValueError as exc:
                rejects.append((entry, where or None, line, _at(where, str(exc)), device))
                continue
            for key, value in values:
                if isinstance(value, str):
                    rows.append((entry, line_no, device, point.measurement, key, None, value,
                                 ts))
                else:
                    rows.append((entry, line_no, device, point.measurement, key, value, None,
                                 ts))
        return rows, rejects

    def _assemble(self, entries: pa.Table, fields: pl.DataFrame, rejects: list[tuple],
                  settings: LineProtocolSettings) -> Batch:
        mapping = settings.fields
        qualified = pl.concat_str("measurement", pl.lit("."), "field")
        metric = pl.coalesce(
            qualified.replace_strict(mapping, default=None, return_dtype=pl.String),
            pl.col("field").replace_strict(mapping, default=pl.col("field"),
                                           return_dtype=pl.String)) if mapping \
            else pl.col("field")
        fields = fields.with_columns(metric.alias("metric")).filter(pl.col("metric") != "")
        strings = fields.filter(pl.col("value").is_null())
        for entry, line_no, device, key, text in strings.select(
                "entry", "line_no", "device", "field", "text").iter_rows():
            converted = number(text)
            if converted is None:
                rejects.append((entry, key, text, f"line {line_no}: field '{key}' is a "
                                "string, not a number", device))
        parsed = strings.with_columns(pl.col("text").map_elements(
            number, return_dtype=pl.Float64).alias("value"))
        fields = pl.concat([fields.filter(pl.col("value").is_not_null()),
                            parsed.filter(pl.col("value").is_not_null())]
                           ).sort(["entry", "line_no"], maintain_order=True)
        take = pa.array(fields["entry"].to_numpy(), pa.int64())
        received = entries.column("received_at").cast(pa.int64()).take(take)
        ts_us = fields.select((pl.col("ts_ns") // 1000).alias("ts"))["ts"].to_arrow()
        ts_us = pc.coalesce(ts_us.cast(pa.int64()), received)
        count = fields.height
        readings = pa.table({
            "tenant": entries.column("tenant").take(take),
            "device_id": fields["device"].to_arrow().cast(pa.string()),
            "metric": fields["metric"].to_arrow().cast(pa.string()),
            "ts": ts_us.cast(TS_TYPE),
            "value": fields["value"].to_arrow().cast(pa.float64()),
            "quality": pa.array([0] * count, pa.int16()),
            "received_at": entries.column("received_at").take(take),
            "lat": pa.nulls(count, pa.float64()),
            "lon": pa.nulls(count, pa.float64()),
            "msg_id": entries.column("msg_id").take(take),
        }).cast(WORKING_SCHEMA)
        return Batch(readings, self._rejects(entries, rejects))

    def _rejects(self, entries: pa.Table, rejects: list[tuple]) -> pa.Table:
        if not rejects:
            return REJECT_SCHEMA.empty_table()
        take = pa.array([r[0] for r in rejects], pa.int64())
        devices = [r[4] for r in rejects]
        return pa.table({
            "msg_id": entries.column("msg_id").take(take),
            "tenant": entries.column("tenant").take(take),
            "device_id": pa.array(devices, pa.string()),
            "stage": pa.repeat("decode", len(rejects)),
            "field": pa.array([r[1] for r in rejects], pa.string()),
            "value": pa.array([None if r[2] is None else shown(r[2]) for r in rejects],
                              pa.string()),
            "reason": pa.array([f"{self.name}: {d or 'unknown device'}: {r[3]}"
                                for d, r in zip(devices, rejects, strict=True)], pa.string()),
        }, schema=REJECT_SCHEMA)


for _precision in PRECISIONS:
    register_codec(LineProtocolCodec(_precision))
