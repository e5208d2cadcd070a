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


def decode_payloads(items: list[tuple[bytes, int, DeviceInfo]], ctx: CodecContext
                    ) -> list[Decoded | DecodeError]:
    """Decode (payload, f_port, device) items with each device type's payload codec, a whole
    batch per codec when it offers `decode_many` (the Python codec: one round trip)."""
    results: list[Decoded | DecodeError | None] = [None] * len(items)
    groups: dict[str, list[int]] = {}
    for position, (_, _, device) in enumerate(items):
        groups.setdefault(ctx.device_type(device.type).payload_codec, []).append(position)
    for name, positions in groups.items():
        try:
            codec = get_payload_codec(name)
        except DecodeError as exc:
            for position in positions:
                results[position] = exc
            continue
        many = getattr(codec, "decode_many", None)
        if many is not None:
            answers = many([items[p] for p in positions], ctx)
        else:
            answers = [_decode_one(codec, items[p], ctx) for p in positions]
        for position, answer in zip(positions, answers, strict=True):
            results[position] = answer
    return [r if r is not None else DecodeError("not decoded") for r in results]


def _decode_one(codec: PayloadCodec, item: tuple[bytes, int, DeviceInfo], ctx: CodecContext
                ) -> Decoded | DecodeError:
    try:
        return codec.decode_payload(item[0], item[1], item[2], ctx)
    except DecodeError as exc:
        return exc


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
    """A log codec that hands each entry's bytes to one payload codec (f_port 0), whatever
    the device type's `payload_codec` says (the log codec's name already chose)."""

    def __init__(self, payload_codec: PayloadCodec) -> None:
        self.name = payload_codec.name
        self.payload_codec = payload_codec

    def decode(self, entries: pa.Table) -> Batch:
        ctx = codec_context()
        rows = RowsBuilder(entries, self.name)
        tenants = entries.column("tenant").to_pylist()
        payloads = entries.column("payload").to_pylist()
        infos = ctx.devices(list(zip(tenants, rows.devices, strict=True)))
        items = [(payload, 0, infos[(tenants[i], rows.devices[i])])
                 for i, payload in enumerate(payloads)]
        many = getattr(self.payload_codec, "decode_many", None)
        results = many(items, ctx) if many is not None else [
            _decode_one(self.payload_codec, item, ctx) for item in items]
        for index, result in enumerate(results):
            if isinstance(result, DecodeError):
                rows.reject_error(index, result)
            else:
                add_decoded(rows, index, result, rows.received_us[index])
        return rows.batch()
