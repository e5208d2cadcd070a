"""A fleet of simulated air-quality devices for the demo and the benchmarks.

Each device sends one JSON envelope per second: pm2_5 with a daily cycle (morning and evening
rush hours) and noise, pm10, temperature, humidity and pressure; mobile devices also send
latitude/longitude along a loop. Sequence numbers continue across runs (state file).
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sensorlake.registry import Device

CENTER = (52.0907, 5.1214)  # Utrecht, NL
"""Where the demo city is."""


@dataclass
class SimDevice:
    device: Device
    mobile: bool
    offset: float
    seq: int = 0


def fleet(count: int, tenant: str = "default", seed: int = 7) -> list[SimDevice]:
    """`count` devices around CENTER, about one in seven mobile (bike couriers)."""
    rng = random.Random(seed)
    devices = []
    for index in range(count):
        device_id = f"aq-{index + 1:04d}"
        mobile = index % 7 == 6
        angle = rng.uniform(0, 2 * math.pi)
        radius = rng.uniform(0.002, 0.04)
        lat = round(CENTER[0] + radius * math.sin(angle), 6)
        lon = round(CENTER[1] + radius * 1.6 * math.cos(angle), 6)
        devices.append(SimDevice(
            Device(id=device_id, tenant=tenant, type="air_quality",
                   name=f"{'Bike' if mobile else 'Station'} {index + 1}",
                   lat=None if mobile else lat, lon=None if mobile else lon, alt=None if mobile
                   else 5.0, tags={"network": "demo", "mobile": str(mobile).lower()}),
            mobile=mobile, offset=rng.uniform(-3, 6)))
    return devices


def pm25_level(moment: datetime, offset: float, rng: random.Random) -> float:
    """A daily cycle with rush-hour peaks (local ≈ UTC+1), noise, never negative."""
    hour = (moment.hour + 1 + moment.minute / 60) % 24
    rush = 9 * math.exp(-((hour - 8.5) ** 2) / 2) + 11 * math.exp(-((hour - 18) ** 2) / 3)
    night = 4 * math.cos(2 * math.pi * (hour - 2) / 24)
    return max(0.5, 8 + offset + rush + night + rng.gauss(0, 1.2))


def envelope(sim: SimDevice, moment: datetime, rng: random.Random) -> dict:
    """The next envelope of `sim` at `moment` (advances its seq)."""
    sim.seq += 1
    pm25 = pm25_level(moment, sim.offset, rng)
    hour = moment.hour + moment.minute / 60
    readings = {
        "pm2_5": round(pm25, 1),
        "pm10": round(pm25 * 1.6 + abs(rng.gauss(0, 2)), 1),
        "temperature": round(9 + 4 * math.sin(2 * math.pi * (hour - 9) / 24)
                             + rng.gauss(0, 0.1), 2),
        "humidity": round(min(100.0, 78 - 12 * math.sin(2 * math.pi * (hour - 9) / 24)
                              + rng.gauss(0, 0.5)), 1),
        "pressure": round(1013 + 3 * math.sin(moment.timestamp() / 86400) + rng.gauss(0, 0.05),
                          1),
    }
    if sim.mobile:
        phase = (moment.timestamp() / 600 + sim.offset) % (2 * math.pi)
        readings["latitude"] = round(CENTER[0] + 0.015 * math.sin(phase), 6)
        readings["longitude"] = round(CENTER[1] + 0.025 * math.cos(phase), 6)
    return {"device": sim.device.id, "ts": moment.astimezone(UTC).isoformat(
        timespec="milliseconds").replace("+00:00", "Z"), "seq": sim.seq, "readings": readings}


def load_state(path: Path, sims: list[SimDevice]) -> None:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    for sim in sims:
        sim.seq = int(state.get(sim.device.id, 0))


def save_state(path: Path, acked: dict[str, int]) -> None:
    """Remember the highest seq the server acknowledged per device (atomic replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(acked))
    tmp.replace(path)
