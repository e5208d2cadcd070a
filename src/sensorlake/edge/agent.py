"""The edge agent process: read reading sets (stdin lines, a simulated device, or the Python
API) into the outbox and upload them until the watermark confirms them.

Input lines are JSON or CSV:

    {"ts": "2026-11-23T14:00:00Z", "readings": {"energy": 1234.5, "power": 410}}
    {"ts": 1795413600000, "energy": 1234.5, "power": 410}          # flat; ts optional
    ts,energy,power                                                # CSV: a header row,
    2026-11-23T14:00:00Z,1234.5,410                                # then one set per line
"""

from __future__ import annotations

import csv
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from sensorlake.decode.envelope import EnvelopeError, parse_ts
from sensorlake.edge.device_types import Generator, load_type
from sensorlake.edge.outbox import Outbox, OutboxFull, Reading
from sensorlake.edge.uploader import Uploader
from sensorlake.errors import InputError

log = logging.getLogger(__name__)

CHUNK = 500
"""Sets read from the input per durable append."""


@dataclass
class LineReader:
    """Parses input lines into reading sets; remembers the CSV header; counts bad lines."""

    clock: Callable[[], float] = time.time
    header: list[str] | None = None
    errors: list[str] = field(default_factory=list)
    line_number: int = 0

    def parse(self, line: str) -> Reading | None:
        self.line_number += 1
        text = line.strip()
        if not text or text.startswith("#"):
            return None
        try:
            if text.startswith("{"):
                return self._json(text)
            return self._csv(text)
        except InputError as exc:
            self.errors.append(f"line {self.line_number}: {exc}")
            return None

    def _stamp(self, value: Any, where: str) -> int:
        if value in (None, ""):
            return int(self.clock() * 1_000_000)
        if isinstance(value, str) and value.replace(".", "", 1).isdigit():
            value = float(value)
        try:
            return parse_ts(value, where)
        except EnvelopeError as exc:
            raise InputError(f"{where}: {exc} ({value!r})") from None

    def _json(self, text: str) -> Reading:
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise InputError(f"invalid JSON at byte {exc.pos}: {exc.msg}") from None
        if not isinstance(doc, dict):
            raise InputError("expected a JSON object")
        readings = doc.get("readings", {k: v for k, v in doc.items() if k not in ("ts",
                                                                                     "device")})
        return self._stamp(doc.get("ts"), "ts"), self._numbers(readings)

    def _csv(self, text: str) -> Reading | None:
        cells = next(csv.reader([text]))
        if self.header is None:
            self.header = [c.strip() for c in cells]
            return None
        if len(cells) != len(self.header):
            raise InputError(f"{len(cells)} cells, the header has {len(self.header)}")
        row = dict(zip(self.header, cells, strict=True))
        ts = row.pop("ts", None)
        return self._stamp(ts, "ts"), self._numbers({k: v for k, v in row.items() if v != ""})

    @staticmethod
    def _numbers(readings: Any) -> dict[str, float]:
        if not isinstance(readings, dict) or not readings:
            raise InputError("no readings (expected metric: number pairs)")
        out = {}
        for metric, value in readings.items():
            try:
                out[str(metric)] = float(value)
            except (TypeError, ValueError):
                raise InputError(f"{metric}={value!r} is not a number") from None
        return out


class EdgeAgent:
    """Appends what `source` yields (lines) and uploads in the background."""

    def __init__(self, outbox: Outbox, device: str, uploader: Uploader,
                 reader: LineReader | None = None) -> None:
        self.outbox = outbox
        self.device = device
        self.uploader = uploader
        self.reader = reader or LineReader(outbox.clock)
        self.appended = 0
        self.refused = 0
        self.stop = threading.Event()
        self.wake = threading.Event()
        self._thread = threading.Thread(target=uploader.run, args=(self.stop, 0.2, self.wake),
                                        name="edge-upload", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def feed(self, lines: Iterable[str]) -> None:
        """Append the sets of `lines` in durable chunks (a full outbox under `reject`
        waits for the uploader instead of losing the input)."""
        chunk: list[Reading] = []
        for line in lines:
            parsed = self.reader.parse(line)
            if parsed is not None:
                chunk.append(parsed)
            if len(chunk) >= CHUNK:
                self._append(chunk)
                chunk = []
            if self.stop.is_set():
                return
        if chunk:
            self._append(chunk)

    def simulate(self, type_name: str, rate: float | None = None) -> None:
        """Append a simulated device's reading sets (a device type, see
        edge/device_types.py) until the agent stops; `rate` sets per second."""
        kind = load_type(type_name)
        generator = Generator(kind, random.Random(self.device))
        period = 1 / rate if rate else kind.interval_seconds
        while not self.stop.is_set():
            now = self.outbox.clock()
            self._append([(int(now * 1e6), generator.sample(now))])
            self.stop.wait(period)

    def _append(self, chunk: list[Reading]) -> None:
        while not self.stop.is_set():
            try:
                self.appended += self.outbox.append_many(self.device, chunk)
                self.wake.set()
                return
            except OutboxFull as exc:
                self.refused += 1
                if self.refused == 1 or self.refused % 100 == 0:
                    log.warning("%s; waiting", exc)
                self.stop.wait(1.0)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until everything appended is confirmed; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.uploader.idle:
            if self.stop.is_set() or (deadline is not None and time.monotonic() > deadline):
                return False
            time.sleep(0.1)
        return True

    def close(self) -> None:
        self.stop.set()
        self.wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
