"""ChirpStack v4 up events (`chirpstack`): its MQTT integration
(`application/<app>/device/<devEui>/event/up`) and its HTTP integration (`?event=up`).

JSON in the Protocol Buffers JSON mapping (lowerCamelCase; zero values omitted, so a missing
`fCnt` is 0): `deduplicationId` (the message id, used by ingest), `time`, `deviceInfo.devEui`,
`fPort`, `fCnt`, base64 `data`, `object` (only when the device profile has a codec) and
`rxInfo[]` with `rssi` / `snr` per gateway. `object` wins over `data`.
"""

from __future__ import annotations

from typing import Any

from sensorlake.decode.base import register_codec
from sensorlake.decode.lorawan import LorawanCodec, Uplink, best_gateway, counter, timestamp
from sensorlake.decode.rows import b64decode
from sensorlake.errors import DecodeError


class ChirpStackCodec(LorawanCodec):
    name = "chirpstack"

    def parse(self, doc: dict[str, Any], received_us: int) -> Uplink:
        decoded = doc.get("object")
        if decoded is not None and not isinstance(decoded, dict):
            raise DecodeError("expected a JSON object", "object")
        data = doc.get("data")
        rssi, snr = best_gateway(doc.get("rxInfo"))
        return Uplink(
            ts_us=timestamp(doc.get("time"), "time", received_us),
            f_port=counter(doc.get("fPort"), "fPort"),
            f_cnt=counter(doc.get("fCnt"), "fCnt"),
            decoded=decoded,
            payload=None if data in (None, "") else b64decode(data, "data"),
            rssi=rssi, snr=snr)


register_codec(ChirpStackCodec())
