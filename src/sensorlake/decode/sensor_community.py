"""Sensor.Community open-data records (`sensor_community`), one record per log entry.

    {"id": 6169764636, "timestamp": "2020-01-22 14:33:46",
     "location": {"latitude": "51.044", "longitude": "13.746", ...},
     "sensor": {"id": 1356, "sensor_type": {"name": "SDS011"}},
     "sensordatavalues": [{"value": "0.20", "value_type": "P1"}, ...]}

Values are strings and become numbers. `P1` is PM10, `P2` PM2.5, `P0` PM1; `pressure` is in
Pa and is stored in hPa. Value types with no catalog metric (`NO_METRIC`: noise, particle
counts, sea-level pressure, firmware diagnostics) are not stored unless
`[sensor_community] value_types` maps them; any other value type is quarantined by name.
The table is shared with the airrohr codec, which strips the sensor prefix first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import pyarrow as pa

from sensorlake.decode.base import register_codec
from sensorlake.decode.context import codec_context
from sensorlake.decode.lorawan import timestamp
from sensorlake.decode.rows import RowsBuilder, number
from sensorlake.errors import DecodeError
from sensorlake.process.base import Batch

VALUE_TYPES: dict[str, tuple[str, float]] = {
    "P0": ("pm1", 1.0),
    "P1": ("pm10", 1.0),
    "P2": ("pm2_5", 1.0),
    "temperature": ("temperature", 1.0),
    "humidity": ("humidity", 1.0),
    "pressure": ("pressure", 0.01),
    "co2": ("co2", 1.0),
    "lat": ("latitude", 1.0),
    "lon": ("longitude", 1.0),
    "signal": ("rssi", 1.0),
}
"""value_type -> (metric, factor to the canonical unit)."""

NO_METRIC = frozenset({
    "pressure_at_sealevel", "noise_LAeq", "noise_LA_min", "noise_LA_max", "noise_Leq",
    "P4", "N05", "N1", "N25", "N4", "N10", "TS", "counts_per_minute", "hv_pulses", "counts",
    "sample_time_ms", "height", "alt", "timestamp", "date", "time", "samples", "min_micro",
    "max_micro", "interval", "battery_voltage", "battery_percentage",
})
"""Value types known to Sensor.Community that have no catalog metric (skipped)."""

UNKNOWN = ("", 0.0)


def value_metric(value_type: str, extra: Mapping[str, str]) -> tuple[str, float] | None:
    """(metric, factor), None to skip the value, UNKNOWN when nothing says what it is."""
    builtin = VALUE_TYPES.get(value_type)
    if value_type in extra:
        name = extra[value_type]
        if not name:
            return None
        return (name, builtin[1] if builtin and builtin[0] == name else 1.0)
    if builtin is not None:
        return builtin
    return None if value_type in NO_METRIC else UNKNOWN


def add_values(rows: RowsBuilder, index: int, values: Any, ts_us: int,
               metric_of: Any, lat: float | None = None, lon: float | None = None) -> None:
    """Append `sensordatavalues`; `metric_of(value_type)` names them (see value_metric)."""
    if not isinstance(values, list):
        raise DecodeError("expected a list of {value_type, value}", "sensordatavalues")
    for position, item in enumerate(values):
        where = f"sensordatavalues[{position}]"
        if not isinstance(item, dict) or not isinstance(item.get("value_type"), str):
            rows.reject(index, where, item, "expected {\"value_type\": ..., \"value\": ...}")
            continue
        value_type = item["value_type"]
        target = metric_of(value_type)
        if target is None:
            continue
        if target == UNKNOWN:
            rows.reject(index, value_type, item.get("value"),
                        f"value_type '{value_type}' has no metric: map it under "
                        "[sensor_community] value_types (or to \"\" to skip it)")
            continue
        raw = item.get("value")
        if raw in (None, ""):
            continue
        converted = number(raw)
        if converted is None:
            rows.reject(index, value_type, raw, "is not a number")
            continue
        metric, factor = target
        rows.add(index, metric, converted * factor, ts_us, lat, lon)


def _coordinate(location: Any, key: str) -> float | None:
    if not isinstance(location, dict):
        return None
    return number(location.get(key))


class SensorCommunityCodec:
    name = "sensor_community"

    def decode(self, entries: pa.Table) -> Batch:
        extra = codec_context().settings.sensor_community.value_types
        rows = RowsBuilder(entries, self.name)
        for index, raw in enumerate(entries.column("payload").to_pylist()):
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                rows.reject(index, f"byte {exc.pos}", None, f"invalid JSON: {exc.msg}")
                continue
            try:
                if not isinstance(record, dict):
                    raise DecodeError("a record must be a JSON object", "$")
                if not rows.devices[index]:
                    raise DecodeError("the record has no sensor.id and timestamp", "sensor.id")
                ts = timestamp(record.get("timestamp"), "timestamp", rows.received_us[index])
                location = record.get("location")
                add_values(rows, index, record.get("sensordatavalues"), ts,
                           lambda t: value_metric(t, extra),
                           _coordinate(location, "latitude"), _coordinate(location, "longitude"))
            except DecodeError as exc:
                rows.reject_error(index, exc)
        return rows.batch()


register_codec(SensorCommunityCodec())
