"""The demo's simulator loop: every device posts one envelope per second, retrying until the
server acknowledges it (the demo itself never loses a reading)."""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime

import httpx
from rich.table import Table

from sensorlake.aqi import us_epa_aqi, us_epa_category
from sensorlake.runtime import Runtime
from sensorlake.simulator import SimDevice, envelope, load_state, save_state


class DemoFeed:
    def __init__(self, runtime: Runtime, sims: list[SimDevice], token: str) -> None:
        self.runtime = runtime
        self.sims = sims
        self.token = token
        self.state_file = runtime.settings.path("demo", "simulator.json")
        load_state(self.state_file, sims)
        self.sent = 0
        self.acked = 0
        self.failed: str | None = None
        self.latest: list[tuple[str, str, str, str]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rng = random.Random()

    def start(self, url: str) -> None:
        self._thread = threading.Thread(target=self._run, args=(url,), daemon=True,
                                        name="demo-feed")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    def _run(self, url: str) -> None:
        pending: list[dict] = []
        acked: dict[str, int] = {s.device.id: s.seq for s in self.sims}
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=10) as client:
            next_tick = time.monotonic()
            while not self._stop.is_set():
                now = datetime.now(UTC)
                pending.extend(envelope(sim, now, self._rng) for sim in self.sims)
                still: list[dict] = []
                for message in pending:
                    if self._stop.is_set():
                        still.append(message)
                        continue
                    try:
                        response = client.post("/api/v1/ingest", json=message)
                    except httpx.HTTPError:
                        still.append(message)
                        continue
                    self.sent += 1
                    if response.status_code == 200:
                        self.acked += 1
                        acked.update(response.json().get("watermarks", {}))
                    elif response.status_code in (429, 503):
                        still.append(message)
                    else:
                        self.failed = f"{response.status_code}: {response.text[:200]}"
                pending = still[-100_000:]
                save_state(self.state_file, acked)
                next_tick += 1.0
                self._stop.wait(max(0.0, next_tick - time.monotonic()))


def summary_table(runtime: Runtime, feed: DemoFeed) -> Table:
    """What the run stored, with the latest PM2.5 per device coloured by AQI category."""
    stats = runtime.worker.stats
    table = Table(title=f"stored {stats.stored:,} readings from {feed.acked:,} messages · "
                  f"{stats.rejects} quarantined · {stats.lake_flushes} lake flushes")
    for column in ("device", "pm2_5 µg/m³", "AQI (US)", "category"):
        table.add_column(column)
    for row in feed.latest[:10]:
        table.add_row(*row)
    return table


def latest_rows(runtime: Runtime) -> list[tuple[str, str, str, str]]:
    rows = []
    latest = runtime.hot.latest(runtime.settings.default_tenant, ("pm2_5",)).to_pylist()
    for item in sorted(latest, key=lambda r: r["device_id"]):
        aqi = us_epa_aqi("pm2_5", item["value"])
        name, colour = us_epa_category(aqi)
        rows.append((item["device_id"], f"{item['value']:.1f}", str(aqi),
                     f"[black on {colour}] {name} [/]"))
    return rows
