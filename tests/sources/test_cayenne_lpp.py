"""Cayenne LPP: a golden vector for every type of the reference table, channel maps, the
payload's own unix time, and errors that name the byte offset."""

from __future__ import annotations

import pytest
from sources_support import NOW_US, CodecSetup, entries, rows

from sensorlake.decode import get_codec
from sensorlake.decode.cayenne_lpp import TYPES, decode_lpp
from sensorlake.errors import DecodeError

# (hex payload, expected (metric, value) pairs with the default names)
GOLDEN = [
    ("010001", [("digital_in_1", 1)]),
    ("020100", [("digital_out_2", 0)]),
    ("0302ff38", [("analog_in_3", -2.0)]),
    ("040304d2", [("analog_out_4", 12.34)]),
    ("056501f4", [("illuminance_5", 500)]),
    ("066601", [("presence_6", 1)]),
    ("03670110056700ff", [("temperature", 27.2), ("temperature", 25.5)]),  # TTS docs example
    ("0167ffd8", [("temperature", -4.0)]),
    ("026850", [("humidity", 40.0)]),
    ("067104d1fb2f0000", [("accelerometer_6_x", 1.233), ("accelerometer_6_y", -1.233),
                          ("accelerometer_6_z", 0.0)]),
    ("0773277f", [("pressure", 1011.1)]),
    ("0874014a", [("voltage", 3.3)]),
    ("097503e8", [("current", 1.0)]),
    ("0a760000c350", [("frequency_10", 50000)]),
    ("0b7864", [("percentage_11", 100)]),
    ("0c79ff9c", [("altitude_12", -100)]),
    ("0d7d0190", [("concentration_13", 400)]),
    ("0e8004b0", [("power", 1200)]),
    ("0f8200003039", [("distance_15", 12.345)]),
    ("10830001e240", [("energy", 123.456)]),
    ("118400b4", [("direction_17", 180)]),
    ("13860064ff9c0000", [("gyrometer_19_x", 1.0), ("gyrometer_19_y", -1.0),
                          ("gyrometer_19_z", 0.0)]),
    ("1487ff8000", [("colour_20_r", 255), ("colour_20_g", 128), ("colour_20_b", 0)]),
    ("018806765ff2960a0003e8", [("latitude", 42.3519), ("longitude", -87.9094),
                                ("altitude", 10.0)]),  # myDevices documentation example
    ("158e01", [("switch_21", 1)]),
]


def approx_pairs(got: list[tuple[str, float]], expected: list[tuple[str, float]]) -> bool:
    return [n for n, _ in got] == [n for n, _ in expected] and \
        [v for _, v in got] == pytest.approx([v for _, v in expected])


@pytest.mark.parametrize("payload,expected", GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden_vectors(payload: str, expected: list[tuple[str, float]]) -> None:
    decoded = decode_lpp(bytes.fromhex(payload))
    assert approx_pairs(decoded.values, expected), decoded.values
    assert decoded.ts_us is None


def test_every_reference_type_has_a_golden_vector() -> None:
    covered = {bytes.fromhex(p)[1] for p, _ in GOLDEN} | {133}
    assert covered == set(TYPES), sorted(set(TYPES) - covered)


def test_energy_counter_at_its_wrap_point() -> None:
    assert decode_lpp(bytes.fromhex("0183ffffffff")).values == [("energy", 4294967.295)]


def test_unix_time_stamps_the_payload_and_is_not_a_reading() -> None:
    decoded = decode_lpp(bytes.fromhex("01856b042ac0" "026700ff"))
    assert decoded.ts_us == NOW_US
    assert decoded.values == [("temperature", 25.5)]


def test_channel_map_names_and_drops_values() -> None:
    channels = {"3": "pm2_5", "5": "", "6": "vibration", "1": "gps_altitude"}
    decoded = decode_lpp(bytes.fromhex("030204d2" "056700ff" "0671000100020003"
                                       "018806765ff2960a0003e8"), channels)
    assert approx_pairs(decoded.values, [
        ("pm2_5", 12.34), ("vibration_x", 0.001), ("vibration_y", 0.002),
        ("vibration_z", 0.003), ("latitude", 42.3519), ("longitude", -87.9094),
        ("gps_altitude", 10.0)]), decoded.values


@pytest.mark.parametrize("payload,where,message", [
    ("01c800", "byte 1", "unknown Cayenne LPP type 200 on channel 1"),
    ("016701", "byte 2", "temperature (103) on channel 1 needs 2 data bytes, 1 left"),
    ("026850" "03", "byte 3", "a channel byte with no type after it"),
    ("018500000000", "byte 2", "unix time 0 on channel 1 is not a date"),
])
def test_bad_payloads_name_the_byte_offset(payload: str, where: str, message: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_lpp(bytes.fromhex(payload))
    assert caught.value.where == where
    assert message in str(caught.value)


def test_log_codec_uses_the_device_types_channel_map(codecs: CodecSetup) -> None:
    codecs({"aq-1": ("lpp-pm", {})},
           device_types={"lpp-pm": {"channels": {"3": "pm2_5", "4": "pm10"}}})
    batch = get_codec("cayenne_lpp").decode(entries(
        [bytes.fromhex("030204d2" "040203e8"), bytes.fromhex("03c8"), b""],
        "cayenne_lpp", ["aq-1", "aq-1", "other"]))
    assert rows(batch.readings, "device_id", "metric", "value") == [
        ("aq-1", "pm2_5", 12.34), ("aq-1", "pm10", 10.0)]
    assert rows(batch.rejects, "msg_id", "field") == [("m1", "byte 1")]
    assert "cayenne_lpp: aq-1: byte 1: unknown Cayenne LPP type 200" in \
        batch.rejects.column("reason")[0].as_py()
