"""Simulated device types as data (YAML or JSON): attributes with generators.

    name: energy_meter
    interval_seconds: 300
    attributes:
      energy: {kind: counter, start: 12000, per_hour: 0.45}
      power:  {kind: diurnal, mean: 450, amplitude: 250, peak_hour: 19, noise: 40, min: 0}

Generators: constant (value), uniform (low, high), gaussian (mean, stddev), diurnal (mean,
amplitude, peak_hour, noise: a daily sine), random_walk (start, step, min, max), counter
(start, per_hour, noise: monotonic), route (points [[lat, lon], ...], seconds_per_point:
emits latitude and longitude), choice (values, weights: pick one). Every generator takes
min, max and round. Built-ins: air_quality, energy_meter, weather (device_types/*.yaml).
"""

from __future__ import annotations

import math
import random
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sensorlake.errors import InputError, NotFound

Kind = Literal["constant", "uniform", "gaussian", "diurnal", "random_walk", "counter",
               "route", "choice"]
NEEDS: dict[str, tuple[str, ...]] = {
    "constant": ("value",), "uniform": ("low", "high"), "gaussian": ("mean", "stddev"),
    "diurnal": ("mean", "amplitude"), "random_walk": ("start", "step"),
    "counter": ("start", "per_hour"), "route": ("points",), "choice": ("values",)}


class Attribute(BaseModel):
    """One generated metric (a route generates latitude and longitude)."""

    model_config = ConfigDict(extra="forbid")
    kind: Kind
    value: float | None = None
    low: float | None = None
    high: float | None = None
    mean: float | None = None
    stddev: float | None = None
    amplitude: float | None = None
    peak_hour: float = 12.0
    noise: float = 0.0
    start: float | None = None
    step: float | None = None
    per_hour: float | None = None
    points: list[tuple[float, float]] | None = None
    seconds_per_point: float = 60.0
    values: list[float] | None = None
    weights: list[float] | None = None
    min: float | None = None
    max: float | None = None
    round: int | None = None

    @model_validator(mode="after")
    def _complete(self) -> Attribute:
        missing = [name for name in NEEDS[self.kind] if getattr(self, name) is None]
        if missing:
            raise ValueError(f"a {self.kind} generator needs {', '.join(missing)}")
        return self


class DeviceType(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    interval_seconds: float = Field(60, gt=0, description="Seconds between two messages.")
    attributes: dict[str, Attribute]


def builtin_names() -> list[str]:
    folder = resources.files("sensorlake.edge") / "device_types"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir()
                  if p.name.endswith(".yaml"))


def load_type(name_or_path: str) -> DeviceType:
    """A built-in type by name, or a YAML/JSON file (import)."""
    if name_or_path in builtin_names():
        text = (resources.files("sensorlake.edge") / "device_types" /
                f"{name_or_path}.yaml").read_text()
        where = f"built-in type {name_or_path}"
    else:
        path = Path(name_or_path)
        if not path.exists():
            raise NotFound(f"no device type '{name_or_path}': use one of "
                           f"{', '.join(builtin_names())} or a YAML/JSON file")
        text, where = path.read_text(), str(path)
    try:
        return DeviceType.model_validate(yaml.safe_load(text))
    except (yaml.YAMLError, ValidationError) as exc:
        raise InputError(f"{where}: not a valid device type: {exc}") from None


def export_type(device_type: DeviceType) -> str:
    """YAML that `load_type` reads back."""
    data = device_type.model_dump(exclude_defaults=True)
    data["attributes"] = {k: v.model_dump(exclude_none=True, exclude_defaults=True) | {
        "kind": v.kind} for k, v in device_type.attributes.items()}
    return yaml.safe_dump(data, sort_keys=False)


class Generator:
    """The state of one device's attributes; `sample(t)` gives its readings at time t."""

    def __init__(self, device_type: DeviceType, rng: random.Random) -> None:
        self.type = device_type
        self.rng = rng
        self.state: dict[str, float] = {}
        self.last_t: float | None = None

    def sample(self, t: float) -> dict[str, float]:
        """Readings at epoch seconds `t` (in order of calls)."""
        dt = 0.0 if self.last_t is None else max(0.0, t - self.last_t)
        self.last_t = t
        out: dict[str, float] = {}
        for name, attr in self.type.attributes.items():
            if attr.kind == "route":
                out.update(self._route(attr, t))
                continue
            out[name] = self._shape(attr, self._value(name, attr, t, dt))
        return out

    def _value(self, name: str, a: Attribute, t: float, dt: float) -> float:
        rng = self.rng
        if a.kind == "constant":
            return float(a.value)  # type: ignore[arg-type]
        if a.kind == "uniform":
            return rng.uniform(a.low, a.high)  # type: ignore[arg-type]
        if a.kind == "gaussian":
            return rng.gauss(a.mean, a.stddev)  # type: ignore[arg-type]
        if a.kind == "diurnal":
            hour = (t / 3600) % 24
            wave = math.cos(2 * math.pi * (hour - a.peak_hour) / 24)
            return a.mean + a.amplitude * wave + rng.gauss(0, a.noise)  # type: ignore[operator]
        if a.kind == "random_walk":
            current = self.state.get(name, a.start)  # type: ignore[arg-type]
            current = self._clip(a, current + rng.gauss(0, a.step))  # type: ignore[arg-type]
            self.state[name] = current
            return current
        if a.kind == "counter":
            current = self.state.get(name, a.start)  # type: ignore[arg-type]
            rise = a.per_hour * dt / 3600 * max(0.0, 1 + rng.gauss(0, a.noise))  # type: ignore[operator]
            self.state[name] = current + rise
            return current + rise
        weights = a.weights or None
        return float(rng.choices(a.values, weights)[0])  # type: ignore[arg-type]

    def _route(self, a: Attribute, t: float) -> dict[str, float]:
        points = a.points or []
        position = (t / a.seconds_per_point) % len(points)
        index = int(position)
        (lat0, lon0), (lat1, lon1) = points[index], points[(index + 1) % len(points)]
        frac = position - index
        return {"latitude": round(lat0 + (lat1 - lat0) * frac, 6),
                "longitude": round(lon0 + (lon1 - lon0) * frac, 6)}

    @staticmethod
    def _clip(a: Attribute, value: float) -> float:
        if a.min is not None:
            value = max(a.min, value)
        if a.max is not None:
            value = min(a.max, value)
        return value

    def _shape(self, a: Attribute, value: float) -> float:
        value = self._clip(a, value)
        return round(value, a.round) if a.round is not None else value
