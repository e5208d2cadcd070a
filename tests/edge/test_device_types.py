"""Device types are data: built-ins load, export and import round-trip, generators behave,
and a bad file is refused with the reason."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from sensorlake.edge.device_types import Generator, builtin_names, export_type, load_type
from sensorlake.errors import InputError, NotFound
from sensorlake.model import METRICS

T = 1_795_435_200.0


def test_builtins_load_and_emit_catalog_metrics() -> None:
    assert builtin_names() == ["air_quality", "energy_meter", "weather"]
    for name in builtin_names():
        readings = Generator(load_type(name), random.Random(1)).sample(T)
        assert readings and set(readings) <= set(METRICS), (name, readings)


def test_export_then_import_gives_the_same_type(tmp_path: Path) -> None:
    original = load_type("energy_meter")
    path = tmp_path / "meter.yaml"
    path.write_text(export_type(original))
    assert load_type(str(path)) == original


def test_generators(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text('{"name": "t", "attributes": {'
                    '"energy": {"kind": "counter", "start": 100, "per_hour": 1.0},'
                    '"power": {"kind": "constant", "value": 5},'
                    '"pm2_5": {"kind": "choice", "values": [1, 2, 3]},'
                    '"pressure": {"kind": "random_walk", "start": 1000, "step": 50, '
                    '"min": 990, "max": 1010},'
                    '"temperature": {"kind": "uniform", "low": 1, "high": 2, "round": 1},'
                    '"place": {"kind": "route", "points": [[52, 5], [53, 6]], '
                    '"seconds_per_point": 10}}}')
    gen = Generator(load_type(str(path)), random.Random(3))
    samples = [gen.sample(T + 3600 * i) for i in range(5)]
    energy = [s["energy"] for s in samples]
    assert energy == sorted(energy) and energy[-1] == pytest.approx(104)
    assert {s["power"] for s in samples} == {5.0}
    assert {s["pm2_5"] for s in samples} <= {1.0, 2.0, 3.0}
    assert all(990 <= s["pressure"] <= 1010 for s in samples)
    assert all(1 <= s["temperature"] <= 2 for s in samples)
    halfway = Generator(load_type(str(path)), random.Random(3)).sample(5)
    assert halfway["latitude"] == pytest.approx(52.5) and halfway["longitude"] == 5.5


def test_bad_types_are_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="air_quality, energy_meter, weather"):
        load_type("no-such-type")
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nattributes:\n  power: {kind: gaussian, mean: 1}\n")
    with pytest.raises(InputError, match="needs stddev"):
        load_type(str(path))
