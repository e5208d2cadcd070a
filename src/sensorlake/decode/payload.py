"""Payload codecs: raw device bytes (a LoRaWAN FRMPayload) -> named values.

The LoRaWAN codecs (`chirpstack`, `tts`) call the payload codec of the device's type when the
network server sent no decoded object; the same payload codecs are also log codecs of their
own (`cayenne_lpp`, `python`) for raw bytes arriving by other routes (MQTT).

    register_payload_codec(codec)          # like register_codec, by name
    get_payload_codec(name)                # DecodeError listing the valid names if unknown
    object_values(obj, fields)             # a decoded JSON object -> Decoded
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa

from sensorlake.decode.context import CodecContext, DeviceInfo, codec_context
from sensorlake.decode.rows import RowsBuilder, flatten, mapped, number
from sensorlake.errors import DecodeError
from sensorlake.process.base import Batch


@dataclass
class Decoded:
    """What one payload decodes to: (metric, value) pairs, and the problems found."""

    values: list[tuple[str, float]] = field(default_factory=list)
    ts_us: int | None = None
    """A timestamp carried in the payload itself (Cayenne LPP unix time), if any."""
    problems: list[tuple[str, Any, str]] = field(default_factory=list)
    """(field, value, message) for values that could not be used; the others are kept."""


@runtime_checkable
class PayloadCodec(Protocol):
    name: str

    def decode_payload(self, payload: bytes, f_port: int, device: DeviceInfo,
                       ctx: CodecContext) -> Decoded:
        """Decode one payload; raise DecodeError (with `where`) if it cannot be read."""
        ...


PAYLOAD_CODECS: dict[str, PayloadCodec] = {}


def register_payload_codec(codec: PayloadCodec) -> PayloadCodec:
    PAYLOAD_CODECS[codec.name] = codec
    return codec


def get_payload_codec(name: str) -> PayloadCodec:
    _load_builtins()
    try:
        return PAYLOAD_CODECS[name]
    except KeyError:
        valid = ", ".join(sorted(PAYLOAD_CODECS))
        raise DecodeError(f"unknown payload codec '{name}'; valid payload codecs: {valid} "
                          "(set [device_types.<type>] payload_codec)") from None


def _load_builtins() -> None:
    from sensorlake.decode import cayenne_lpp, python_codec  # noqa: F401  (register)


def object_values(obj: Mapping[str, Any], fields: Mapping[str, str]) -> Decoded:
    """A decoded object's numeric leaves, named through the device type's field map."""
    decoded = Decoded()
    for name, value in flatten(obj):
        metric = mapped(name, fields)
        if metric is None or value is None:
            continue
        converted = number(value)
        if converted is None:
            decoded.problems.append((name, value, "is not a number (map it to \"\" in "
                                     "[device_types.<type>] fields to ignore it)"))
        else:
            decoded.values.append((metric, converted))
    return decoded


def add_decoded(rows: RowsBuilder, index: int, decoded: Decoded, ts_us: int,
                lat: float | None = None, lon: float | None = None) -> None:
    """Append a Decoded's values (at its own timestamp if it carries one) and problems."""
    stamp = decoded.ts_us if decoded.ts_us is not None else ts_us
    for metric, value in decoded.values:
        rows.add(index, metric, value, stamp, lat, lon)
    for name, value, message in decoded.problems:
        rows.reject(index, name, value, message)


class RawPayloadCodec:
    """A log codec that hands each entry's bytes to one payload codec (f_port 0)."""

    def __init__(self, payload_codec: PayloadCodec) -> None:
        self.name = payload_codec.name
        self.payload_codec = payload_codec

    def decode(self, entries: pa.Table) -> Batch:
        ctx = codec_context()
        rows = RowsBuilder(entries, self.name)
        tenants = entries.column("tenant").to_pylist()
        payloads = entries.column("payload").to_pylist()
        infos = ctx.devices(list(zip(tenants, rows.devices, strict=True)))
        for index, payload in enumerate(payloads):
            device = infos[(tenants[index], rows.devices[index])]
            try:
                decoded = self.payload_codec.decode_payload(payload, 0, device, ctx)
            except DecodeError as exc:
                rows.reject_error(index, exc)
                continue
            add_decoded(rows, index, decoded, rows.received_us[index])
        return rows.batch()
