"""The airrohr firmware's "send to own API" POST (`airrohr`).

    {"esp8266id": "12345678", "software_version": "NRZ-2020-133",
     "sensordatavalues": [{"value_type": "SDS_P1", "value": "1.83"},
                          {"value_type": "BME280_pressure", "value": "100512.5"}, ...]}

A value type is looked up in the device type's `fields` map as sent (`SPS30_P4`), then
without its sensor prefix (`SDS_`, `PMS_`, `SPS30_`, `BME280_`, `DHT22_`, ...) in the
Sensor.Community table: `P1` -> pm10, `P2` -> pm2_5, `P0` -> pm1, `pressure` Pa -> hPa,
`signal` (WiFi) -> rssi. The firmware sends no timestamp: readings are stamped on arrival.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
import pyarrow as pa

from sensorlake.decode.base import register_codec
from sensorlake.decode.context import codec_context
from sensorlake.decode.rows import RowsBuilder
from sensorlake.decode.sensor_community import add_values, value_metric
from sensorlake.errors import DecodeError
from sensorlake.process.base import Batch

PREFIX = re.compile(r"^[A-Z][A-Z0-9]*_(.+)$")


def strip_prefix(value_type: str) -> str:
    """`SDS_P1` -> `P1`, `BME280_pressure` -> `pressure`; unprefixed names unchanged."""
    match = PREFIX.match(value_type)
    return match.group(1) if match else value_type


def metric_for(value_type: str, fields: dict[str, str], extra: dict[str, str]
               ) -> tuple[str, float] | None:
    if value_type in fields:
        name = fields[value_type]
        return (name, 1.0) if name else None
    return value_metric(strip_prefix(value_type), extra)


class AirrohrCodec:
    name = "airrohr"

    def decode(self, entries: pa.Table) -> Batch:
        ctx = codec_context()
        extra = ctx.settings.sensor_community.value_types
        rows = RowsBuilder(entries, self.name)
        tenants = entries.column("tenant").to_pylist()
        infos = ctx.devices(list(zip(tenants, rows.devices, strict=True)))
        for index, raw in enumerate(entries.column("payload").to_pylist()):
            try:
                doc = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                rows.reject(index, f"byte {exc.pos}", None, f"invalid JSON: {exc.msg}")
                continue
            fields = ctx.device_type(infos[(tenants[index], rows.devices[index])].type).fields

            def metric_of(value_type: str, fields: dict[str, str] = fields) -> Any:
                return metric_for(value_type, fields, extra)

            try:
                if not isinstance(doc, dict):
                    raise DecodeError("the body must be a JSON object", "$")
                if not rows.devices[index]:
                    raise DecodeError("no device: send the X-Sensor header (esp8266-<chip "
                                      "id>)", "X-Sensor")
                add_values(rows, index, doc.get("sensordatavalues"), rows.received_us[index],
                           metric_of)
            except DecodeError as exc:
                rows.reject_error(index, exc)
        return rows.batch()


register_codec(AirrohrCodec())
