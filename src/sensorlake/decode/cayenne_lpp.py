"""Cayenne LPP (`cayenne_lpp`): repeated [channel u8][type u8][data, big-endian].

Every type of the reference table is decoded (shared/reference/formats.md). A value is named
by the device type's channel map (`[device_types.<type>] channels = {"3" = "pm2_5"}`), else
by its type: the catalog metric for temperature, humidity, barometer (pressure), voltage,
current, power, energy and GPS (latitude, longitude), `<type>_<channel>` for the others
(`analog_in_3`). Types with several values append the axis (`accelerometer_2_x`, or
`<mapped>_x`); GPS altitude is `altitude` (or the channel's mapped name). A unix time (133)
is not a reading: it becomes the timestamp of the payload's readings. The payload is read
whole or not at all: an unknown type or a truncated value rejects it, naming the byte offset.
"""

from __future__ import annotations

from dataclasses import dataclass

from sensorlake.decode.base import register_codec
from sensorlake.decode.context import CodecContext, DeviceInfo
from sensorlake.decode.payload import Decoded, RawPayloadCodec, register_payload_codec
from sensorlake.errors import DecodeError

UNIX_TIME = 133
GPS = 136
MAX_UNIX_SECONDS = 4_102_444_800  # 2100-01-01


@dataclass(frozen=True)
class LppType:
    id: int
    name: str
    size: int
    parts: tuple[tuple[str, int, int, float, bool], ...]
    """(suffix, byte offset, byte width, resolution, signed) per value."""
    metric: str | None = None
    """Catalog metric used when the channel is not mapped (single-value types)."""


def _one(id_: int, name: str, width: int, resolution: float, signed: bool = False,
         metric: str | None = None) -> LppType:
    return LppType(id_, name, width, (("", 0, width, resolution, signed),), metric)


def _axes(id_: int, name: str, width: int, resolution: float, suffixes: tuple[str, ...],
          signed: bool) -> LppType:
    parts = tuple((s, i * width, width, resolution, signed) for i, s in enumerate(suffixes))
    return LppType(id_, name, width * len(suffixes), parts)


TYPES: dict[int, LppType] = {t.id: t for t in [
    _one(0, "digital_in", 1, 1),
    _one(1, "digital_out", 1, 1),
    _one(2, "analog_in", 2, 0.01, signed=True),
    _one(3, "analog_out", 2, 0.01, signed=True),
    _one(101, "illuminance", 2, 1),
    _one(102, "presence", 1, 1),
    _one(103, "temperature", 2, 0.1, signed=True, metric="temperature"),
    _one(104, "humidity", 1, 0.5, metric="humidity"),
    _axes(113, "accelerometer", 2, 0.001, ("x", "y", "z"), signed=True),
    _one(115, "barometer", 2, 0.1, metric="pressure"),
    _one(116, "voltage", 2, 0.01, metric="voltage"),
    _one(117, "current", 2, 0.001, metric="current"),
    _one(118, "frequency", 4, 1),
    _one(120, "percentage", 1, 1),
    _one(121, "altitude", 2, 1, signed=True),
    _one(125, "concentration", 2, 1),
    _one(128, "power", 2, 1, metric="power"),
    _one(130, "distance", 4, 0.001),
    _one(131, "energy", 4, 0.001, metric="energy"),
    _one(132, "direction", 2, 1),
    _one(UNIX_TIME, "unix_time", 4, 1),
    _axes(134, "gyrometer", 2, 0.01, ("x", "y", "z"), signed=True),
    _axes(135, "colour", 1, 1, ("r", "g", "b"), signed=False),
    LppType(GPS, "gps", 9, (("latitude", 0, 3, 0.0001, True),
                            ("longitude", 3, 3, 0.0001, True),
                            ("altitude", 6, 3, 0.01, True))),
    _one(142, "switch", 1, 1),
]}


def _name(lpp: LppType, channel: int, suffix: str, channels: dict[str, str]) -> str | None:
    """The metric of one value; None when the channel is mapped to "" (ignored)."""
    mapped = channels.get(str(channel))
    if lpp.id == GPS:
        if suffix != "altitude":
            return suffix
        return "altitude" if mapped is None else (mapped or None)
    if mapped == "":
        return None
    if not suffix:
        return mapped or lpp.metric or f"{lpp.name}_{channel}"
    return f"{mapped or f'{lpp.name}_{channel}'}_{suffix}"


def decode_lpp(payload: bytes, channels: dict[str, str] | None = None) -> Decoded:
    """Decode a whole LPP payload; DecodeError(where="byte N") if any part is invalid."""
    channels = channels or {}
    decoded = Decoded()
    offset = 0
    while offset < len(payload):
        if offset + 2 > len(payload):
            raise DecodeError(f"a channel byte with no type after it "
                              f"(payload is {len(payload)} bytes)", f"byte {offset}")
        channel, type_id = payload[offset], payload[offset + 1]
        lpp = TYPES.get(type_id)
        if lpp is None:
            raise DecodeError(f"unknown Cayenne LPP type {type_id} on channel {channel}",
                              f"byte {offset + 1}")
        start = offset + 2
        if start + lpp.size > len(payload):
            raise DecodeError(
                f"{lpp.name} ({type_id}) on channel {channel} needs {lpp.size} data bytes, "
                f"{len(payload) - start} left", f"byte {start}")
        for suffix, part, width, resolution, signed in lpp.parts:
            raw = int.from_bytes(payload[start + part:start + part + width], "big",
                                 signed=signed)
            if type_id == UNIX_TIME:
                if not 0 < raw < MAX_UNIX_SECONDS:
                    raise DecodeError(f"unix time {raw} on channel {channel} is not a date "
                                      "between 1970 and 2100", f"byte {start}")
                decoded.ts_us = raw * 1_000_000
                continue
            metric = _name(lpp, channel, suffix, channels)
            if metric is not None:
                decoded.values.append((metric, round(raw * resolution, 10)))
        offset = start + lpp.size
    return decoded


class CayenneLppPayload:
    name = "cayenne_lpp"

    def decode_payload(self, payload: bytes, f_port: int, device: DeviceInfo,
                       ctx: CodecContext) -> Decoded:
        return decode_lpp(payload, ctx.device_type(device.type).channels)


register_payload_codec(CayenneLppPayload())
register_codec(RawPayloadCodec(CayenneLppPayload()))
