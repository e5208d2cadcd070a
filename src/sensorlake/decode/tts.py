"""The Things Stack v3 uplinks (`tts`): MQTT (`v3/<app>@<tenant>/devices/<id>/up`) and
webhooks (the same JSON).

`end_device_ids{device_id, dev_eui, ...}`, `correlation_ids[]` (the `as:up:` one is the
message id, used by ingest), `received_at`, and `uplink_message{f_port, f_cnt, frm_payload
(base64), decoded_payload, rx_metadata[{rssi, channel_rssi, snr}], received_at}`. Fields whose
value is empty, 0 or false are omitted by TTS: a missing `f_cnt` or `f_port` is 0.
`decoded_payload` (the application's payload formatter) wins over `frm_payload`.
"""

from __future__ import annotations

from typing import Any

from sensorlake.decode.base import register_codec
from sensorlake.decode.lorawan import LorawanCodec, Uplink, best_gateway, counter, timestamp
from sensorlake.decode.rows import b64decode
from sensorlake.errors import DecodeError


class TheThingsStackCodec(LorawanCodec):
    name = "tts"

    def parse(self, doc: dict[str, Any], received_us: int) -> Uplink:
        uplink = doc.get("uplink_message")
        if not isinstance(uplink, dict):
            raise DecodeError("not an uplink message (no uplink_message object)",
                              "uplink_message")
        decoded = uplink.get("decoded_payload")
        if decoded is not None and not isinstance(decoded, dict):
            raise DecodeError("expected a JSON object", "uplink_message.decoded_payload")
        frm = uplink.get("frm_payload")
        rssi, snr = best_gateway(uplink.get("rx_metadata"), ("rssi", "channel_rssi"))
        return Uplink(
            ts_us=timestamp(uplink.get("received_at") or doc.get("received_at"),
                            "uplink_message.received_at", received_us),
            f_port=counter(uplink.get("f_port"), "uplink_message.f_port"),
            f_cnt=counter(uplink.get("f_cnt"), "uplink_message.f_cnt"),
            decoded=decoded,
            payload=None if frm in (None, "") else b64decode(frm, "uplink_message.frm_payload"),
            rssi=rssi, snr=snr)


register_codec(TheThingsStackCodec())
