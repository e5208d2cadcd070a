"""ChirpStack v4 and The Things Stack v3: recorded uplinks through the codecs, and the HTTP
integrations end to end (identity by DevEUI tag, message ids, ignored events, quarantine)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from sources_support import Api, CodecSetup, entries, fixture, rows

from sensorlake.decode import get_codec
from sensorlake.registry import Device

AA_CODEC = "def decode_uplink(payload, f_port, variables):\n" \
           "    return {'temperature': payload[0] / 10, 'port': f_port}\n"


def us(text: str) -> int:
    at = datetime.fromisoformat(text)
    return int(at.replace(tzinfo=at.tzinfo or UTC).timestamp() * 1_000_000)


def codec_file(folder: Path, name: str, source: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(source)


# -- codecs on recorded payloads ---------------------------------------------------------------

def test_chirpstack_docs_uplink_with_a_python_codec(codecs: CodecSetup, tmp_path: Path) -> None:
    """`data` (0xAA) goes to the device type's Python codec with fPort; rssi/snr of the only
    gateway; the absent fCnt is 0; the timestamp is `time` (nanoseconds truncated)."""
    settings = codecs({"node-1": ("aa-node", {})},
                      device_types={"aa-node": {"payload_codec": "python",
                                                "fields": {"port": ""}}})
    codec_file(settings.data_dir / "codecs", "aa-node", AA_CODEC)
    batch = get_codec("chirpstack").decode(entries([fixture("chirpstack/up.json")],
                                                   "chirpstack", "node-1"))
    ts = us("2022-07-18T09:34:15.775023+00:00")
    assert rows(batch.readings, "metric", "value", "ts") == [
        ("temperature", 17.0, datetime.fromtimestamp(ts / 1e6, UTC)),
        ("rssi", -36.0, datetime.fromtimestamp(ts / 1e6, UTC)),
        ("snr", 10.5, datetime.fromtimestamp(ts / 1e6, UTC)),
        ("f_cnt", 0.0, datetime.fromtimestamp(ts / 1e6, UTC))]
    assert batch.rejects.num_rows == 0


def test_chirpstack_object_wins_and_is_named_through_the_field_map(codecs: CodecSetup) -> None:
    codecs({"lse01": ("dragino-lse01", {})}, device_types={"dragino-lse01": {"fields": {
        "BatV": "voltage", "temp_SOIL": "temperature", "temp_DS18B20": "",
        "water_SOIL_f": "", "conduct_SOIL": ""}}}, lorawan={"radio_metrics": False})
    batch = get_codec("chirpstack").decode(entries([fixture("chirpstack/up_object.json")],
                                                   "chirpstack", "lse01"))
    assert rows(batch.readings, "metric", "value") == [("voltage", 3.301),
                                                       ("temperature", 13.25)]


def test_chirpstack_object_without_a_map_keeps_the_names(codecs: CodecSetup) -> None:
    codecs(lorawan={"radio_metrics": False})
    batch = get_codec("chirpstack").decode(entries([fixture("chirpstack/up_object.json")],
                                                   "chirpstack", "lse01"))
    assert [m for m, in rows(batch.readings, "metric")] == [
        "BatV", "temp_DS18B20", "temp_SOIL", "water_SOIL_f", "conduct_SOIL"]


def test_tts_docs_uplink_uses_decoded_payload(codecs: CodecSetup) -> None:
    codecs({"dev1": ("uno", {})}, device_types={"uno": {"fields": {"luminosity": ""}}})
    batch = get_codec("tts").decode(entries([fixture("tts/uplink.json")], "tts", "dev1"))
    ts = datetime.fromtimestamp(us("2020-02-12T15:15:45.789585+00:00") / 1e6, UTC)
    assert rows(batch.readings, "metric", "value", "ts") == [
        ("temperature", 1.0, ts), ("rssi", -35.0, ts), ("snr", 5.0, ts), ("f_cnt", 1.0, ts)]


def test_tts_frm_payload_in_cayenne_with_the_best_gateway(codecs: CodecSetup) -> None:
    """No decoded_payload: frm_payload through Cayenne LPP with the type's channel map; the
    best gateway is the one with the highest RSSI (channel_rssi when rssi is absent)."""
    codecs({"dev1": ("lpp2", {})},
           device_types={"lpp2": {"channels": {"3": "temperature", "5": "humidity"}}})
    batch = get_codec("tts").decode(entries([fixture("tts/uplink_cayenne.json")], "tts",
                                            "dev1"))
    assert rows(batch.readings, "metric", "value") == [
        ("temperature", 27.2), ("humidity", 25.5), ("rssi", -20.0), ("snr", 9.75),
        ("f_cnt", 113.0)]


@pytest.mark.parametrize("codec,doc,field,message", [
    ("chirpstack", {"deviceInfo": {"devEui": "01"}, "data": "not base64!"}, "data",
     "not valid base64"),
    ("chirpstack", {"deviceInfo": {"devEui": "01"}, "fPort": 2, "data": "A8g="},
     "payload byte 1", "cayenne_lpp: unknown Cayenne LPP type 200 on channel 3 (fPort 2)"),
    ("chirpstack", {"fCnt": -1}, "fCnt", "expected a non-negative integer"),
    ("chirpstack", {"time": "yesterday"}, "time", "not an ISO 8601 timestamp"),
    ("chirpstack", {"object": [1, 2]}, "object", "expected a JSON object"),
    ("tts", {"join_accept": {}}, "uplink_message", "not an uplink message"),
    ("tts", {"uplink_message": {"f_port": "x"}}, "uplink_message.f_port",
     "expected a non-negative integer"),
])
def test_bad_uplinks_are_rejected_naming_the_field(codecs: CodecSetup, codec: str, doc: dict,
                                                   field: str, message: str) -> None:
    codecs()
    batch = get_codec(codec).decode(entries([orjson.dumps(doc)], codec, "node-1"))
    assert batch.readings.num_rows == 0
    (reject,) = batch.rejects.to_pylist()
    assert reject["field"] == field
    assert message in reject["reason"] and "node-1" in reject["reason"], reject["reason"]


def test_invalid_json_unknown_payload_codec_and_no_device(codecs: CodecSetup) -> None:
    codecs({"node-1": ("odd", {})}, device_types={"odd": {"payload_codec": "morse"}})
    batch = get_codec("chirpstack").decode(entries(
        [b'{"data": ', orjson.dumps({"data": "AQ=="}), orjson.dumps({"fPort": 1})],
        "chirpstack", ["node-1", "node-1", ""]))
    reasons = dict(rows(batch.rejects, "msg_id", "reason"))
    fields = dict(rows(batch.rejects, "msg_id", "field"))
    assert "invalid JSON" in reasons["m0"] and fields["m0"] == "byte 9"
    assert "unknown payload codec 'morse'; valid payload codecs: cayenne_lpp, python" in \
        reasons["m1"]
    assert "names no device" in reasons["m2"]


def test_uplink_without_payload_and_radio_metrics_off_is_rejected(codecs: CodecSetup) -> None:
    codecs(lorawan={"radio_metrics": False})
    batch = get_codec("tts").decode(entries([orjson.dumps({"uplink_message": {}})], "tts"))
    assert "carries no decoded object and no payload" in batch.rejects.column("reason")[0].as_py()


# -- the HTTP integrations, end to end -------------------------------------------------------


@pytest.fixture
def lora_api(make_api: Callable[..., Api]) -> Api:
    api = make_api(device_types={"aa-node": {"payload_codec": "python",
                                             "fields": {"port": ""}},
                                 "uno": {"fields": {"luminosity": ""}}})
    codec_file(api.runtime.settings.data_dir / "codecs", "aa-node", AA_CODEC)
    api.runtime.registry.upsert([
        Device(id="node-1", type="aa-node", tags={"dev_eui": "0101010101010101"}, lat=50.9,
               lon=11.6),
        Device(id="dev1", type="uno", lat=37.9, lon=23.7)])
    return api


def test_chirpstack_http_integration_end_to_end(lora_api: Api) -> None:
    api, body = lora_api, fixture("chirpstack/up.json")
    url = "/api/v1/integrations/chirpstack?event=up"
    first = api.client.post(url, content=body, headers=api.headers())
    assert first.status_code == 200 and first.json() == {"accepted": 1, "duplicates": 0}
    again = api.client.post(url, content=body, headers=api.headers())
    assert again.json() == {"accepted": 0, "duplicates": 1}, "deduplicationId is the msg id"
    join = api.client.post("/api/v1/integrations/chirpstack?event=join", content=body,
                           headers=api.headers())
    assert join.status_code == 200 and "ignored" in join.json()
    stored = api.wait_stored(4)
    assert [(d, m, v) for d, m, _, v in stored] == [
        ("node-1", "f_cnt", 0.0), ("node-1", "rssi", -36.0), ("node-1", "snr", 10.5),
        ("node-1", "temperature", 17.0)]
    api.drain()
    assert api.runtime.log.stats().last_offset == 1


def test_tts_webhook_end_to_end(lora_api: Api) -> None:
    api = lora_api
    response = api.client.post("/api/v1/integrations/tts", content=fixture("tts/uplink.json"),
                               headers=api.headers())
    assert response.status_code == 200, response.text
    join = api.client.post("/api/v1/integrations/tts", json={
        "end_device_ids": {"device_id": "dev1"}, "join_accept": {"session_key_id": "x"}},
        headers=api.headers())
    assert join.status_code == 200 and join.json()["ignored"].startswith("not an uplink")
    stored = api.wait_stored(4)
    assert ("dev1", "temperature", 1.0) in [(d, m, v) for d, m, _, v in stored]
    assert api.quarantined() == []


def test_unregistered_or_anonymous_events_reach_the_quarantine(lora_api: Api) -> None:
    api = lora_api
    stranger = orjson.loads(fixture("chirpstack/up.json"))
    stranger["deviceInfo"]["devEui"] = "FFFFFFFFFFFFFFFF"
    stranger["deduplicationId"] = "other"
    ok = api.client.post("/api/v1/integrations/chirpstack", json=stranger,
                         headers=api.headers())
    assert ok.status_code == 200  # stored raw; the worker quarantines the unknown device
    anonymous = api.client.post("/api/v1/integrations/chirpstack", json={"fPort": 1},
                                headers=api.headers())
    assert anonymous.status_code == 400 and anonymous.json()["detail"]["quarantined"] == 1
    quarantined = api.wait_quarantined(2)
    devices = {q["device_id"] for q in quarantined}
    assert devices == {"ffffffffffffffff", ""}
    assert all(q["payload"] for q in quarantined), "raw bytes are kept"


def test_tokens_bound_to_a_device_and_missing_credentials(lora_api: Api) -> None:
    api = lora_api
    from sensorlake.auth.tokens import Role
    bound, _ = api.runtime.tokens.create(Role.INGEST, "default", device_id="dev1")
    refused = api.client.post("/api/v1/integrations/chirpstack",
                              content=fixture("chirpstack/up.json"), headers=api.headers(bound))
    assert refused.status_code == 403
    anonymous = api.client.post("/api/v1/integrations/tts", content=fixture("tts/uplink.json"))
    assert anonymous.status_code == 401
    basic = base64.b64encode(f"chirpstack:{api.ingest}".encode()).decode()
    accepted = api.client.post("/api/v1/integrations/tts", content=fixture("tts/uplink.json"),
                               headers={"Authorization": f"Basic {basic}"})
    assert accepted.status_code == 200, accepted.text
