"""The fleet simulator behind `sensorlake simulate`: N devices of one type sending to
sensorlake over HTTP or MQTT, directly or through edge agents, with scenarios (outages,
clock offset, malformed and duplicate messages). The report counts, per device, what was
generated, sent and acknowledged (the watermark), so loss can be computed.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from sensorlake.config import EdgeSettings
from sensorlake.edge.device_types import DeviceType, Generator
from sensorlake.edge.outbox import Outbox
from sensorlake.edge.transport import Transport, Unreachable, open_transport
from sensorlake.edge.uploader import Uploader
from sensorlake.errors import AuthError


@dataclass
class Scenario:
    outages: list[tuple[float, float]] = field(default_factory=list)
    """(start, duration) in seconds since the run started: devices cannot reach sensorlake."""
    clock_offset: float = 0.0
    """Seconds added to every timestamp (a device clock that is off)."""
    malformed: float = 0.0
    """Fraction of messages replaced by broken JSON (quarantined, never acknowledged)."""
    duplicates: float = 0.0
    """Fraction of messages sent twice (stored once)."""

    def offline(self, elapsed: float) -> bool:
        return any(start <= elapsed < start + length for start, length in self.outages)


@dataclass
class DeviceReport:
    generated: int = 0
    sent: int = 0
    """Valid messages sent (directly) or reading sets appended to the outbox (via edge)."""
    acked: int = 0
    """Of those, how many sensorlake acknowledged (its watermark)."""
    not_sent: int = 0
    """Generated while offline by a device without an outbox (lost at the device)."""
    malformed: int = 0
    duplicates: int = 0
    backlog: int = 0
    """Via edge: reading sets still in the outbox at the end."""

    @property
    def lost(self) -> int:
        return self.sent - self.acked - self.backlog


class Switch:
    """A transport that an outage switches off."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.off = False

    def send(self, bodies: list[bytes]) -> int | None:
        if self.off:
            raise Unreachable("simulated outage")
        return self.inner.send(bodies)

    def watermark(self) -> int | None:
        return None if self.off else self.inner.watermark()

    def close(self) -> None:
        self.inner.close()


class FleetSimulator:
    """Devices `names` of `device_type`, `rate` messages per second each."""

    def __init__(self, device_type: DeviceType, names: list[str], target: str,
                 credentials: dict[str, str], rate: float, scenario: Scenario | None = None,
                 seed: int = 7, via_edge: Path | None = None, state_file: Path | None = None,
                 edge_settings: EdgeSettings | None = None) -> None:
        self.type = device_type
        self.names = names
        self.rate = rate
        self.scenario = scenario or Scenario()
        self.rng = random.Random(seed)
        self.generators = {n: Generator(device_type, random.Random(f"{seed}/{n}"))
                           for n in names}
        self.reports = {n: DeviceReport() for n in names}
        self.transports = {n: Switch(open_transport(target, n, credentials[n])) for n in names}
        self.state_file = state_file
        self.base = self._load_seqs()
        self.seqs = dict(self.base)
        self.outboxes: dict[str, Outbox] = {}
        self.uploaders: dict[str, Uploader] = {}
        if via_edge is not None:
            for name in names:
                box = Outbox(via_edge / f"{name}.db")
                self.outboxes[name] = box
                self.uploaders[name] = Uploader(box, name, self.transports[name],
                                                edge_settings or EdgeSettings())
            self.base = {n: self._confirmed(n) for n in names}

    def _load_seqs(self) -> dict[str, int]:
        try:
            saved = json.loads(self.state_file.read_text()) if self.state_file else {}
        except (OSError, ValueError):
            saved = {}
        return {n: int(saved.get(n, 0)) for n in self.names}

    def _confirmed(self, name: str) -> int:
        return next((s["confirmed"] for s in self.outboxes[name].status()
                     if s["device"] == name), 0)

    def run(self, seconds: float, on_tick: Callable[[float], None] | None = None,
            settle: float = 15.0) -> dict[str, DeviceReport]:
        """Send for `seconds`, then wait up to `settle` s for the acknowledgements."""
        self._wait_connected(10.0)
        started = time.monotonic()
        tick = 0
        while (elapsed := time.monotonic() - started) < seconds:
            offline = self.scenario.offline(elapsed)
            for transport in self.transports.values():
                transport.off = offline
            moment = time.time() + self.scenario.clock_offset
            for name in self.names:
                self._emit(name, moment, offline)
            for uploader in self.uploaders.values():
                uploader.step()
            if on_tick:
                on_tick(elapsed)
            tick += 1
            pause = started + tick / self.rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        for transport in self.transports.values():
            transport.off = False
        self._settle(settle)
        return self.reports

    def _wait_connected(self, timeout: float) -> None:
        """MQTT clients connect in the background: give them a moment before the first tick."""
        deadline = time.monotonic() + timeout
        for switch in self.transports.values():
            connected = getattr(switch.inner, "connected", None)
            if connected is not None:
                connected.wait(max(0.0, deadline - time.monotonic()))

    def _emit(self, name: str, moment: float, offline: bool) -> None:
        report = self.reports[name]
        readings = self.generators[name].sample(moment)
        report.generated += 1
        if name in self.outboxes:
            self.outboxes[name].append(name, readings, int(moment * 1e6))
            report.sent += 1
            return
        if offline:
            report.not_sent += 1
            return
        if self.rng.random() < self.scenario.malformed:
            report.malformed += 1
            self._send(name, b'{"device": "%s", "readings": {"pm2_5": 1.0' % name.encode())
            return
        self.seqs[name] += 1
        body = orjson.dumps({"device": name, "seq": self.seqs[name],
                             "ts": round(moment * 1000, 3), "readings": readings})
        report.sent += 1
        self._send(name, body)
        if self.rng.random() < self.scenario.duplicates:
            report.duplicates += 1
            self._send(name, body)

    def _send(self, name: str, body: bytes) -> None:
        try:
            mark = self.transports[name].send([body])
        except (Unreachable, AuthError):
            return
        if mark is not None:
            self.reports[name].acked = max(self.reports[name].acked, mark - self.base[name])

    def _settle(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            for uploader in self.uploaders.values():
                uploader.step()
            done = True
            for name, report in self.reports.items():
                if name in self.outboxes:
                    report.acked = self._confirmed(name) - self.base[name]
                    report.backlog = next(s["backlog"] for s in self.outboxes[name].status()
                                          if s["device"] == name)
                    done &= report.backlog == 0
                else:
                    mark = self.transports[name].watermark()
                    if mark is not None:
                        report.acked = max(report.acked, mark - self.base[name])
                    done &= report.acked >= report.sent
            if done or time.monotonic() > deadline:
                return
            time.sleep(0.1)

    def close(self) -> None:
        if self.state_file is not None:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            self.state_file.write_text(json.dumps(self.seqs))
        for transport in self.transports.values():
            transport.close()
        for box in self.outboxes.values():
            box.close()


def summary(reports: dict[str, DeviceReport]) -> dict[str, Any]:
    """The report file: per device and totals, with `lost` = sent - acked - backlog."""
    devices = {n: {**asdict(r), "lost": r.lost} for n, r in reports.items()}
    totals: dict[str, int] = {}
    for row in devices.values():
        for key, value in row.items():
            totals[key] = totals.get(key, 0) + value
    return {"devices": devices, "totals": totals}
