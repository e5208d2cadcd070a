"""Hypothesis fuzzing of every decoder and of the ingest splitters, bounded for CI.

Whatever the bytes, a log codec returns readings and rejects (it never raises), a payload
codec raises nothing but DecodeError, ingest raises nothing but the project's own errors,
and no input makes a call take long (a Python codec that hangs is stopped by its limit)."""

from __future__ import annotations

import contextlib
import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sources_support import entries

from sensorlake.auth.tokens import Principal, Role
from sensorlake.config import LineProtocolSettings, load_settings
from sensorlake.decode import CODECS, get_codec
from sensorlake.decode.base import _load_builtins
from sensorlake.decode.cayenne_lpp import decode_lpp
from sensorlake.decode.context import DeviceInfo, configure_codecs
from sensorlake.decode.payload import get_payload_codec
from sensorlake.errors import DecodeError, InputError
from sensorlake.ingest.lineprotocol import scan_body
from sensorlake.ingest.lorawan import lorawan_envelope
from sensorlake.ingest.pollers.sensor_community import split_records
from sensorlake.process.base import REJECT_SCHEMA, WORKING_SCHEMA

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
SLOW_CALL = 10.0  # seconds: far above any honest decode of these small inputs

_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                       st.floats(allow_nan=False), st.text(max_size=12),
                       st.sampled_from(["qg==", "AWcA/w==", "2026-11-23T12:00:00Z",
                                        "2020-01-22 14:33:46", "P1", "SDS_P2", "1.5"]))
_keys = st.sampled_from([
    "deduplicationId", "time", "deviceInfo", "devEui", "fPort", "fCnt", "data", "object",
    "rxInfo", "rssi", "snr", "channel_rssi", "end_device_ids", "device_id", "dev_eui",
    "correlation_ids", "received_at", "uplink_message", "f_port", "f_cnt", "frm_payload",
    "decoded_payload", "rx_metadata", "timestamp", "location", "latitude", "longitude",
    "sensor", "id", "sensordatavalues", "value_type", "value", "esp8266id", "device", "ts",
    "seq", "readings", "batch", "pm2_5", "temperature"])
_json = st.recursive(_json_leaf, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(_keys, children, max_size=6)),
    max_leaves=25)
_payloads = st.one_of(st.binary(max_size=200), _json.map(lambda v: json.dumps(v).encode()),
                      st.text(max_size=200).map(str.encode))

LOG_CODECS = sorted(set(CODECS) | {"envelope", "line_protocol", "line_protocol_s", "tts",
                                   "chirpstack", "cayenne_lpp", "python", "airrohr",
                                   "sensor_community"})


@pytest.fixture(scope="module", autouse=True)
def _hanging_codec(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every device is of a type whose Python codec misbehaves on some bytes."""
    folder = tmp_path_factory.mktemp("fuzz-codecs")
    (folder / "fuzzy.py").write_text(
        "def decode_uplink(payload, f_port, variables):\n"
        "    if payload[:1] == b'\\x00':\n"
        "        while True:\n"
        "            pass\n"
        "    if payload[:1] == b'\\x01':\n"
        "        raise RuntimeError('boom')\n"
        "    return {'temperature': len(payload), 'junk': payload.hex()}\n")
    settings_ = load_settings(data_dir=folder, codecs={"folder": str(folder),
                                                       "time_limit_seconds": 0.2},
                              device_types={"fuzzy": {"payload_codec": "python"}})
    _load_builtins()
    configure_codecs(settings_, lambda pairs: {p: DeviceInfo("fuzzy") for p in pairs})


@pytest.fixture(autouse=True)
def _fresh_codecs() -> None:
    """Keep the module's codec context (overrides the package-wide reset)."""


def test_every_registered_codec_is_fuzzed() -> None:
    _load_builtins()
    assert set(CODECS) <= set(LOG_CODECS)


@pytest.mark.parametrize("name", LOG_CODECS)
@FUZZ
@given(payloads=st.lists(_payloads, min_size=1, max_size=4),
       device=st.sampled_from(["dev-1", "", "*"]))
def test_log_codecs_never_raise(name: str, payloads: list[bytes], device: str) -> None:
    start = time.monotonic()
    batch = get_codec(name).decode(entries(payloads, name, device))
    assert time.monotonic() - start < SLOW_CALL
    assert batch.readings.schema.equals(WORKING_SCHEMA)
    assert batch.rejects.schema.equals(REJECT_SCHEMA)
    assert set(batch.rejects.column("msg_id").to_pylist()) <= {
        f"m{i}" for i in range(len(payloads))}


@FUZZ
@given(st.binary(max_size=64), st.dictionaries(st.integers(0, 255).map(str),
                                               st.sampled_from(["", "x", "pm2_5"])))
def test_cayenne_lpp_raises_only_decode_errors(payload: bytes, channels: dict) -> None:
    try:
        decode_lpp(payload, channels)
    except DecodeError as exc:
        assert exc.where.startswith("byte ")


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=16), st.integers(0, 255))
def test_python_codec_raises_only_decode_errors_and_never_hangs(payload: bytes,
                                                                f_port: int) -> None:
    from sensorlake.decode.context import codec_context
    start = time.monotonic()
    with contextlib.suppress(DecodeError):
        get_payload_codec("python").decode_payload(payload, f_port, DeviceInfo("fuzzy"),
                                                   codec_context())
    assert time.monotonic() - start < SLOW_CALL


@FUZZ
@given(st.lists(st.one_of(st.binary(max_size=60), st.text(max_size=60).map(str.encode)),
                max_size=12).map(b"\n".join), st.sampled_from(["ns", "ms", "s"]))
def test_line_protocol_scan_never_raises(body: bytes, precision: str) -> None:
    result = scan_body(body, Principal("t", Role.INGEST, "default"), LineProtocolSettings(),
                       precision, 0, "fuzz")
    assert result.good + result.bad <= body.count(b"\n") + 1
    assert all(e.payload or e.device_id == "" for e in result.envelopes)


@FUZZ
@given(_payloads, st.sampled_from(["chirpstack", "tts"]))
def test_lorawan_ingest_never_raises(body: bytes, codec: str) -> None:
    class NoIds:
        def resolve(self, tenant: str, tag: str, value: str) -> None:
            return None

    attribution = lorawan_envelope(codec, body, "default", NoIds(), "fuzz", 0)  # type: ignore[arg-type]
    if attribution.envelope is not None:
        assert attribution.envelope.payload == body


@FUZZ
@given(_payloads)
def test_open_data_split_raises_only_input_errors(body: bytes) -> None:
    try:
        data = split_records(body, "default", "fuzz", 0)
    except InputError:
        return
    assert all(e.codec == "sensor_community" for e in data.envelopes)
