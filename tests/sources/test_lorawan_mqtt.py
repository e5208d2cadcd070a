"""Recorded ChirpStack and TTS uplinks published to a real Mosquitto land, through the MQTT
ingest and the `chirpstack` / `tts` codecs, with the right metrics."""

from __future__ import annotations

from collections.abc import Callable

import paho.mqtt.client as mqtt
from sources_support import Api, fixture, poll

from sensorlake.registry import Device
from services import require_service, unique_name


def forget_session(client_id: str) -> None:
    """End the ingest's persistent session on the shared broker (clean start, no expiry)."""
    cleaner = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                          protocol=mqtt.MQTTv5)
    cleaner.connect("127.0.0.1", 1883, clean_start=True)
    cleaner.disconnect()


def test_recorded_uplinks_over_mosquitto(make_api: Callable[..., Api]) -> None:
    require_service("Mosquitto", 1883)
    prefix = unique_name("issue4")
    api = make_api(
        start_worker=True,
        mqtt={"url": "mqtt://127.0.0.1:1883", "password": "unused", "client_id": prefix,
              "subscriptions": {
                  "chirpstack": {"topic": f"{prefix}/application/+/device/+/event/up",
                                 "codec": "chirpstack", "device_level": 4},
                  "tts": {"topic": f"{prefix}/v3/+/devices/+/up", "codec": "tts",
                          "device_level": 4}}},
        device_types={"aa-node": {"payload_codec": "python"},
                      "uno": {"fields": {"luminosity": ""}}})
    codecs = api.runtime.settings.data_dir / "codecs"
    codecs.mkdir(parents=True)
    (codecs / "aa-node.py").write_text("def decode_uplink(payload, f_port, variables):\n"
                                       "    return {'temperature': payload[0] / 10}\n")
    api.runtime.registry.upsert([Device(id="0101010101010101", type="aa-node", lat=1, lon=1),
                                 Device(id="dev1", type="uno", lat=1, lon=1)])
    api.runtime.start_mqtt()
    assert api.runtime.mqtt is not None
    poll(lambda: api.runtime.mqtt.counters.connected, bool)  # type: ignore[union-attr]
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{prefix}-pub",
                         protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", 1883)
    client.loop_start()
    try:
        for topic, name in ((f"{prefix}/application/app1/device/0101010101010101/event/up",
                             "chirpstack/up.json"),
                            (f"{prefix}/v3/app1@ttn/devices/dev1/up", "tts/uplink.json")):
            client.publish(topic, fixture(name), qos=1).wait_for_publish(timeout=10)
        stored = api.wait_stored(8)
    finally:
        client.loop_stop()
        client.disconnect()
        api.runtime.mqtt.stop()  # type: ignore[union-attr]
        api.runtime.mqtt = None
        forget_session(prefix)
    assert [(d, m, v) for d, m, _, v in stored] == [
        ("0101010101010101", "f_cnt", 0.0), ("0101010101010101", "rssi", -36.0),
        ("0101010101010101", "snr", 10.5), ("0101010101010101", "temperature", 17.0),
        ("dev1", "f_cnt", 1.0), ("dev1", "rssi", -35.0), ("dev1", "snr", 5.0),
        ("dev1", "temperature", 1.0)]
    assert api.quarantined() == []
