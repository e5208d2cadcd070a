"""What the ChirpStack and The Things Stack codecs share: one uplink JSON -> readings.

Each network server's codec only reads its JSON into an `Uplink`; this module does the rest:
the decoded object when the network server sent one (named through the device type's
`fields` map), else the raw payload through the device type's payload codec (Cayenne LPP by
default, or a Python codec) with the uplink's fPort; then, with `lorawan.radio_metrics`, the
`rssi` and `snr` of the best gateway (highest RSSI) and the frame counter `f_cnt`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa

from sensorlake.decode.context import CodecContext, DeviceInfo, codec_context
from sensorlake.decode.envelope import EnvelopeError, parse_ts
from sensorlake.decode.payload import Decoded, add_decoded, decode_payloads, object_values
from sensorlake.decode.rows import RowsBuilder, message_of, number
from sensorlake.errors import DecodeError
from sensorlake.process.base import Batch


@dataclass
class Uplink:
    """The parts of one uplink event the readings are made of."""

    ts_us: int
    f_port: int = 0
    f_cnt: int = 0
    """Absent means 0: both network servers omit zero-valued fields from their JSON."""
    decoded: Mapping[str, Any] | None = None
    payload: bytes | None = None
    rssi: float | None = None
    snr: float | None = None


def timestamp(value: Any, where: str, default_us: int) -> int:
    if value in (None, ""):
        return default_us
    try:
        return parse_ts(value, where)
    except EnvelopeError as exc:
        raise DecodeError(str(exc), exc.where) from None


def counter(value: Any, where: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DecodeError(f"expected a non-negative integer, got {value!r}", where)
    return value


def best_gateway(receptions: Any, rssi_keys: Sequence[str] = ("rssi",), snr_key: str = "snr"
                 ) -> tuple[float | None, float | None]:
    """(rssi, snr) of the reception with the highest RSSI (a missing list gives Nones)."""
    best: tuple[float, float | None] | None = None
    for item in receptions if isinstance(receptions, list) else []:
        if not isinstance(item, dict):
            continue
        rssi = next((number(item[k]) for k in rssi_keys if item.get(k) is not None), None)
        if rssi is None:
            continue
        if best is None or rssi > best[0]:
            best = (rssi, number(item.get(snr_key)))
    return (None, None) if best is None else best


class LorawanCodec:
    """Base of the network-server codecs: subclasses implement `parse`."""

    name = "lorawan"

    def parse(self, doc: dict[str, Any], received_us: int) -> Uplink:
        raise NotImplementedError

    def decode(self, entries: pa.Table) -> Batch:
        ctx = codec_context()
        rows = RowsBuilder(entries, self.name)
        tenants = entries.column("tenant").to_pylist()
        payloads = entries.column("payload").to_pylist()
        infos = ctx.devices(list(zip(tenants, rows.devices, strict=True)))
        uplinks: list[tuple[int, Uplink, DeviceInfo]] = []
        for index, raw in enumerate(payloads):
            try:
                doc = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                rows.reject(index, f"byte {exc.pos}", None, f"invalid JSON: {exc.msg}")
                continue
            if not isinstance(doc, dict):
                rows.reject(index, "$", None, "an uplink event must be a JSON object")
                continue
            if not rows.devices[index]:
                rows.reject(index, "$", None, "the event names no device (ChirpStack "
                            "deviceInfo.devEui, TTS end_device_ids)")
                continue
            try:
                uplink = self.parse(doc, rows.received_us[index])
            except DecodeError as exc:
                rows.reject_error(index, exc)
                continue
            uplinks.append((index, uplink, infos[(tenants[index], rows.devices[index])]))
        raw = [(u.payload, u.f_port, d) for _, u, d in uplinks if _needs_codec(u)]
        decoded = iter(decode_payloads(raw, ctx))  # type: ignore[arg-type]
        for index, uplink, device in uplinks:
            try:
                self._emit(rows, index, uplink, device, ctx,
                           next(decoded) if _needs_codec(uplink) else None)
            except DecodeError as exc:
                rows.reject_error(index, exc)
        return rows.batch()

    def _emit(self, rows: RowsBuilder, index: int, uplink: Uplink, device: DeviceInfo,
              ctx: CodecContext, from_payload: Decoded | DecodeError | None) -> None:
        before = rows.count()
        device_type = ctx.device_type(device.type)
        if uplink.decoded:
            add_decoded(rows, index, object_values(uplink.decoded, device_type.fields),
                        uplink.ts_us)
        elif isinstance(from_payload, DecodeError):
            where = f"payload {from_payload.where}" if from_payload.where else "payload"
            raise DecodeError(f"{device_type.payload_codec}: {message_of(from_payload)} "
                              f"(fPort {uplink.f_port})", where)
        elif from_payload is not None:
            add_decoded(rows, index, from_payload, uplink.ts_us)
        if rows.count() == before and not ctx.settings.lorawan.radio_metrics:
            raise DecodeError("the uplink carries no decoded object and no payload")
        if ctx.settings.lorawan.radio_metrics:
            for metric, value in (("rssi", uplink.rssi), ("snr", uplink.snr),
                                  ("f_cnt", float(uplink.f_cnt))):
                if value is not None:
                    rows.add(index, metric, value, uplink.ts_us)


def _needs_codec(uplink: Uplink) -> bool:
    return not uplink.decoded and bool(uplink.payload)
