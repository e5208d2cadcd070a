"""The process board: every server process reports its counters to a JetStream KV bucket.

    <stream>_processes    key = process id, value = one JSON report, rewritten every
                          REPORT_SECONDS by that process (Reporter)

The roles run in separate processes, so an api process cannot read a worker's in-memory
counters. Each process (ingest, worker, api, scheduler) therefore publishes a small report:
roles, host, pid, start, time of writing, its cumulative counters (WorkerStats, HTTP and MQTT
ingest, lake exporter) and its own rates over the last minute. `/api/v1/status`, `/metrics`
and `sensorlake status` read the board plus the stream and consumer state. A report older
than STALE_SECONDS belongs to a process that is gone; its last counters still count towards
the totals until NATS ages the entry out (TTL_SECONDS), so totals do not drop when a process
dies. NATS holds the board (not PostgreSQL) because every role talks to NATS anyway and
ingest must keep working while PostgreSQL is down.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import nats
import orjson
from nats.js import api
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue

from sensorlake.config import JetStreamSettings
from sensorlake.log.jetstream_core import bucket_keys, connect, open_runner
from sensorlake.ops.rates import RateWindow

log = logging.getLogger(__name__)

REPORT_SECONDS = 2.0
STALE_SECONDS = 15.0
"""A process whose report is older than this is counted as gone."""
TTL_SECONDS = 86400.0
"""NATS deletes a report this long after its last write (a process that is long gone)."""


class Board:
    """Read and write the process reports of one deployment (one NATS connection)."""

    def __init__(self, settings: JetStreamSettings, name: str = "board") -> None:
        self.settings = settings
        self._runner = open_runner(name, lambda: self._open(name))

    async def _open(self, name: str) -> None:
        self.nc = await connect(self.settings.servers, name)
        self.js = self.nc.jetstream(timeout=max(self.settings.publish_timeout_seconds, 5))
        bucket = f"{self.settings.stream}_processes"
        try:
            self.kv: KeyValue = await self.js.key_value(bucket)
        except BucketNotFoundError:
            self.kv = await self.js.create_key_value(api.KeyValueConfig(
                bucket=bucket, history=1, ttl=TTL_SECONDS, storage=api.StorageType.FILE,
                replicas=self.settings.replicas))

    def put(self, key: str, report: dict[str, Any]) -> None:
        self._runner.call(self.kv.put(key, orjson.dumps(report)), timeout=10)

    def delete(self, key: str) -> None:
        with contextlib.suppress(Exception):
            self._runner.call(self.kv.purge(key), timeout=5)

    def reports(self) -> list[dict[str, Any]]:
        """Every report on the board (live and recently gone), each with `age_seconds`."""
        async def work() -> list[dict[str, Any]]:
            out = []
            for key in await bucket_keys(self.js, f"{self.settings.stream}_processes"):
                with contextlib.suppress(nats.js.errors.KeyNotFoundError,
                                         nats.js.errors.KeyDeletedError):
                    entry = await self.kv.get(key)
                    if entry.value:
                        out.append(orjson.loads(entry.value))
            return out
        now = time.time()
        reports = list(self._runner.call(work(), timeout=20))
        for report in reports:
            report["age_seconds"] = round(max(0.0, now - float(report.get("at", 0))), 1)
            report["alive"] = report["age_seconds"] <= STALE_SECONDS
        return sorted(reports, key=lambda r: (r.get("roles", []), r.get("host"), r.get("pid")))

    def consumer_state(self) -> tuple[int, int] | None:
        """(not yet delivered, delivered but unacknowledged) of the workers' consumer, or
        None when no worker has created it yet."""
        cfg = self.settings
        try:
            info = self._runner.call(self.js.consumer_info(cfg.stream, cfg.consumer), 10)
        except nats.js.errors.NotFoundError:
            return None
        return int(info.num_pending or 0), int(info.num_ack_pending or 0)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._runner.call(self.nc.close(), timeout=5)
        self._runner.close()


class Reporter:
    """Writes this process's report every REPORT_SECONDS from `snapshot()` (a dict with a
    `counters` mapping of cumulative numbers); adds the rates of those counters over the
    last minute. A failed write is retried at the next round; it never stops the process."""

    def __init__(self, board: Board, key: str, snapshot: Callable[[], dict[str, Any]],
                 every: float = REPORT_SECONDS) -> None:
        self.board, self.key, self.snapshot, self.every = board, key, snapshot, every
        self.rates = RateWindow(every=every / 2)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="reporter", daemon=True)
        self._thread.start()
        self.write()

    @property
    def started(self) -> bool:
        return self._thread is not None

    def report(self) -> dict[str, Any]:
        """This process's report now (also what is written)."""
        doc = self.snapshot()
        counters = doc.get("counters", {})
        self.rates.record(counters)
        rates, covered = self.rates.rates(counters)
        doc.update(at=time.time(), rates={k: round(v, 4) for k, v in rates.items()},
                   window_seconds=round(covered, 1))
        return doc

    def write(self) -> None:
        try:
            self.board.put(self.key, self.report())
            self._failing = False
        except Exception as exc:  # NATS restarting: the next round writes again
            if not self._failing:
                log.warning("could not write this process's report to NATS (%s); retrying", exc)
            self._failing = True

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.write()

    def stop(self, remove: bool = False) -> None:
        """Stop reporting: a last report (so final counters count), or remove it."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=10)
        if remove:
            self.board.delete(self.key)
        else:
            self.write()
