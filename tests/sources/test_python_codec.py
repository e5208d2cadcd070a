"""Per-device-type Python codecs run in a child process with a time limit: whatever a codec
does (raise, hang, exit, return rubbish) costs only its message, which is quarantined with the
reason; the next message decodes normally."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sources_support import Api, CodecSetup, entries, rows

from sensorlake.decode import get_codec
from sensorlake.registry import Device

CODEC = '''
import os, time

def decode_uplink(payload, f_port, variables):
    command = payload[:1]
    if command == b"h":
        while True:
            pass
    if command == b"x":
        raise ValueError("unsupported frame " + payload.hex())
    if command == b"e":
        os._exit(3)
    if command == b"s":
        raise SystemExit(1)
    if command == b"l":
        return [1, 2]
    if command == b"t":
        return {"data": {"temperature": payload[1] - 40}, "warnings": [], "errors": []}
    if command == b"E":
        return {"data": {}, "errors": ["bad checksum"]}
    return {"pm2_5": payload[1] / 10, "nested": {"pm10": payload[2] / 10},
            "site": variables.get("site"), "scale": float(variables["scale"])}
'''


@pytest.fixture
def python_codecs(codecs: CodecSetup, tmp_path: Path) -> CodecSetup:
    settings = codecs({"aq-1": ("elsys", {"site": "roof"})}, codecs={
        "folder": str(tmp_path / "my-codecs"), "time_limit_seconds": 0.5},
        device_types={"elsys": {"payload_codec": "python", "variables": {"scale": "2"},
                                "fields": {"site": "", "nested.pm10": "pm10"}}})
    folder = settings.codecs.folder
    folder.mkdir(parents=True)
    (folder / "elsys.py").write_text(CODEC)
    return codecs


def decode(*payloads: bytes, device: str = "aq-1") -> tuple[list[tuple], list[str]]:
    batch = get_codec("python").decode(entries(list(payloads), "python", device))
    return (rows(batch.readings, "msg_id", "metric", "value"),
            batch.rejects.column("reason").to_pylist())


def test_values_variables_and_field_map(python_codecs: CodecSetup) -> None:
    readings, rejects = decode(bytes([ord("v"), 123, 201]), b"t\x55")
    assert readings == [("m0", "pm2_5", 12.3), ("m0", "pm10", 20.1), ("m0", "scale", 2.0),
                        ("m1", "temperature", 45.0)]
    assert rejects == []


def test_a_codec_that_raises_costs_only_its_message(python_codecs: CodecSetup) -> None:
    readings, rejects = decode(b"x\x01", b"v\x0a\x14", b"E", b"l", b"s")
    assert [r[0] for r in readings] == ["m1"] * 3
    assert "python: aq-1: ValueError: unsupported frame 7801 (elsys.py line 10)" in rejects[0]
    assert "the codec reported errors: ['bad checksum']" in rejects[1]
    assert "decode_uplink returned list, expected a dict" in rejects[2]
    assert "SystemExit: 1" in rejects[3]


def test_a_hanging_or_dying_codec_is_stopped_and_the_next_message_decodes(
        python_codecs: CodecSetup) -> None:
    start = time.monotonic()
    readings, rejects = decode(b"h", b"v\x0a\x14", b"e", b"v\x14\x1e")
    assert time.monotonic() - start < 10
    assert [r[0] for r in readings] == ["m1"] * 3 + ["m3"] * 3
    assert "did not return within 0.5 s (codecs.time_limit_seconds); it was stopped" in \
        rejects[0]
    assert "the codec process died" in rejects[1]


def test_missing_file_and_unusable_type_names(codecs: CodecSetup) -> None:
    codecs({"aq-1": ("nobody", {}), "aq-2": ("../etc", {})},
           device_types={"nobody": {"payload_codec": "python"}})
    _, rejects = decode(b"v12", b"v12", device="aq-1")
    assert "no codec file" in rejects[0] and "nobody.py" in rejects[0]
    _, rejects = decode(b"v12", device="aq-2")
    assert "device type '../etc' cannot name a codec file" in rejects[0]


def test_a_python_codec_behind_chirpstack_end_to_end(make_api: Callable[..., Api]) -> None:
    """The worker keeps going after a codec timeout: later uplinks are stored."""
    import orjson
    api = make_api(codecs={"time_limit_seconds": 0.5},
                   device_types={"elsys": {"payload_codec": "python",
                                           "variables": {"scale": "1"},
                                           "fields": {"site": "", "scale": "",
                                                      "nested.pm10": "pm10"}}})
    folder = api.runtime.settings.data_dir / "codecs"
    folder.mkdir(parents=True)
    (folder / "elsys.py").write_text(CODEC)
    api.runtime.registry.add(Device(id="aq-1", type="elsys", lat=1, lon=2,
                                    tags={"dev_eui": "70b3d57ed0000001"}))
    for n, payload in enumerate([b"h", b"v\x0a\x14"]):  # hangs, then a good one
        event = {"deduplicationId": f"u{n}", "time": "2026-11-23T12:00:00Z", "fPort": 5,
                 "deviceInfo": {"devEui": "70B3D57ED0000001"},
                 "data": __import__("base64").b64encode(payload).decode()}
        response = api.client.post("/api/v1/integrations/chirpstack", content=orjson.dumps(
            event), headers=api.headers())
        assert response.status_code == 200
    stored = api.wait_stored(3)
    assert {m for _, m, _, _ in stored} >= {"pm2_5", "pm10", "f_cnt"}
    (timeout,) = api.wait_quarantined(1)
    assert "did not return within" in timeout["reason"]
    assert api.runtime.worker.stats.errors == 0


def test_a_hung_codec_dies_with_a_killed_parent(tmp_path: Path) -> None:
    """SIGKILL a process whose codec child is stuck in a loop: the child goes too."""
    import os
    import signal
    import subprocess
    import sys
    codec = tmp_path / "spin.py"
    codec.write_text("def decode_uplink(payload, f_port, variables):\n    while True:\n"
                     "        pass\n")
    script = (
        "import sys, threading, time\n"
        "from pathlib import Path\n"
        "from sensorlake.decode.python_codec import _runner\n"
        f"threading.Thread(target=_runner.call_many, args=(Path({str(codec)!r}), "
        "[(b'x', 1, {})], 3600), daemon=True).start()\n"
        "while _runner._proc is None: time.sleep(0.01)\n"
        "print(_runner._proc.pid, flush=True)\n"
        "time.sleep(3600)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              text=True)
    try:
        child = int(parent.stdout.readline())  # type: ignore[union-attr]
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            with open(f"/proc/{child}/stat") as stat:
                if stat.read().split()[2] == "Z":  # a zombie is dead, only unreaped
                    break
            time.sleep(0.05)
        else:
            os.kill(child, signal.SIGKILL)
            raise AssertionError("the codec child outlived its killed parent")
    finally:
        if parent.poll() is None:
            parent.kill()
