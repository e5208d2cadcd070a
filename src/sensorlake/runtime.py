"""One process: ingest (HTTP API), the worker and the stores, wired from the settings.

    Runtime(settings)        opens catalog, log, lake, hot store, quarantine
      .start_worker()        the worker thread (recovers a claimed span first)
      .serve()               uvicorn in the calling thread until SIGINT/SIGTERM or stop()
      .close()               stop accepting, let the worker flush the lake and ack, close files
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn

from sensorlake.auth.services import AuthServices
from sensorlake.auth.tokens import TokenStore
from sensorlake.catalog import Catalog
from sensorlake.config import Settings
from sensorlake.decode.context import configure_codecs, registry_lookup, release_codecs
from sensorlake.ingest.appender import LogAppender
from sensorlake.log import open_log
from sensorlake.ops.embedded import Ops
from sensorlake.pipeline import Worker
from sensorlake.process.base import Context, device_tag_table
from sensorlake.process.quality import previous_from
from sensorlake.registry import DeviceRegistry
from sensorlake.store import rollups
from sensorlake.store.duckdb import DuckDBStore
from sensorlake.store.lake import ParquetLake
from sensorlake.store.quarantine import SQLiteQuarantine
from sensorlake.threads import start_thread

if TYPE_CHECKING:
    from sensorlake.ingest.mqtt import MqttIngest

log = logging.getLogger(__name__)

RETENTION_EVERY_SECONDS = 3600


@dataclass
class IngestCounters:
    http_requests: int = 0
    http_envelopes: int = 0


def open_catalog(settings: Settings) -> Catalog:
    return Catalog(settings.path("catalog.db"))


class Runtime:
    """Everything `sensorlake up` runs, in one process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.catalog = open_catalog(settings)
        self.registry = DeviceRegistry(self.catalog)
        self.tokens = TokenStore(self.catalog)
        self.auth = AuthServices(self.catalog, self.registry, self.tokens, settings)
        self.log = open_log(settings)
        self.appender = LogAppender(self.log)
        self.lake = ParquetLake(settings.path("lake"), settings.lake.compression,
                                settings.lake.compression_level)
        self.hot = DuckDBStore(settings.path("hot", "readings.duckdb"), self.lake,
                               settings.hot.retention_days, threads=settings.hot.threads,
                               rollup_config=rollups.config_from(
                                   settings, self.registry, self.catalog.change_number))
        self.quarantine = SQLiteQuarantine(settings.path("quarantine.db"))
        self.counters = IngestCounters()
        self._codecs = configure_codecs(settings, registry_lookup(self.catalog))
        self.started_at = datetime.now(UTC)
        self._context_lock = threading.Lock()
        self._context_version = -1
        self._context: Context | None = None
        self._context_checked = 0.0
        self.worker = Worker(settings, self.log, self.hot, self.lake, self.quarantine,
                             self.context, on_unknown_devices=self._auto_register)
        self.ops = Ops(self)
        self._stop = threading.Event()
        self._worker_thread: threading.Thread | None = None
        self._server: uvicorn.Server | None = None
        self.url: str | None = None
        self.mqtt: MqttIngest | None = None

    # -- stages' view of the registry -------------------------------------------------------
    def context(self) -> Context:
        """A registry snapshot for the stages, refreshed when any process changed it."""
        with self._context_lock:
            now = time.monotonic()
            if self._context is None or now - self._context_checked > 1.0:
                self._context_checked = now
                version = self.catalog.change_number()
                if version != self._context_version or self._context is None:
                    devices, calibrations = self.registry.snapshot()
                    self._context = Context(self.settings, devices, calibrations,
                                            device_tags=device_tag_table(self.registry.list()))
                    self._context_version = version
            cached = self._context
            return Context(self.settings, cached.devices, cached.calibrations,
                           device_tags=cached.device_tags,
                           previous=previous_from(self.hot) if self.hot is not None else None)

    def refresh_context(self) -> None:
        """Make the next batch re-read the registry (ingest just registered devices)."""
        self._context_checked = 0.0

    def _auto_register(self, pairs: list[tuple[str, str]]) -> None:
        if not self.settings.ingest.auto_register:
            return
        from sensorlake.registry import Device
        self.registry.upsert([Device(tenant=t, id=d) for t, d in pairs])
        self._context_checked = 0.0

    # -- lifecycle --------------------------------------------------------------------------
    def start_worker(self) -> None:
        self._worker_thread = start_thread(self._run_worker, "worker")
        self.ops.start()

    def _run_worker(self) -> None:
        last_retention = 0.0
        stop = threading.Event()

        def maintain() -> None:
            nonlocal last_retention
            while not self._stop.wait(5):
                if self.settings.jobs.enabled:
                    continue  # the scheduler's `retention` job does it
                if time.monotonic() - last_retention > RETENTION_EVERY_SECONDS:
                    last_retention = time.monotonic()
                    try:
                        self.hot.apply_retention(
                            done_offset=self.log.position(self.worker.consumer))
                    except Exception:  # retention must never stop ingest
                        log.exception("retention failed; will try again in an hour")
            stop.set()

        start_thread(maintain, "maintenance")
        try:
            self.worker.run(stop)
        except Exception:
            log.exception("worker stopped on an unexpected error")
            raise

    def start_mqtt(self) -> None:
        """MQTT ingest into this process's log, when `[mqtt] url` is set."""
        if self.settings.mqtt.url and self.mqtt is None:
            from sensorlake.ingest.mqtt import MqttIngest
            self.mqtt = MqttIngest(self.settings, self.log)
            self.mqtt.start()

    def ready(self) -> bool:
        return self._worker_thread is not None and self._worker_thread.is_alive()

    def exported_offset(self) -> int:
        """Every log offset at or below this is in the lake (the worker's acked offset)."""
        return self.log.position(self.worker.consumer)

    def serve(self, host: str | None = None, port: int | None = None,
              on_started: Any = None) -> None:
        """Run the HTTP API in this thread until interrupted; then shut down gracefully."""
        from sensorlake.api.app import create_app
        host = host or self.settings.http.host
        port = self.settings.http.port if port is None else port
        config = uvicorn.Config(create_app(self), host=host, port=port, log_level="warning",
                                access_log=False, lifespan="off", timeout_graceful_shutdown=5,
                                proxy_headers=False, server_header=False, date_header=False)
        self._server = server = uvicorn.Server(config)
        self.url = f"http://{host}:{port}"

        def announce() -> None:
            while not server.started and not self._stop.is_set():
                time.sleep(0.02)
            if server.started:
                self._write_run_file()
                if on_started:
                    on_started(self)

        start_thread(announce, "announce")
        previous = self._soften_signals()
        try:
            server.run()
        finally:
            self.close()
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _soften_signals(self) -> dict[int, Any]:
        """uvicorn re-raises SIGINT/SIGTERM after its graceful shutdown; with the default
        handlers that would end the process before the worker flushed the lake and acked.
        These handlers only ask to stop, so `close()` always runs."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda *_: self.request_stop())
        return previous

    def request_stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        else:
            self._stop.set()

    def close(self) -> None:
        """Finish the current batch, write the pending lake span, ack, close files."""
        if self.mqtt is not None:  # first: what it appends still reaches the worker
            self.mqtt.stop()
        self._stop.set()
        self.ops.close()
        if self._worker_thread is not None:
            self._worker_thread.join(timeout=120)
        self._remove_run_file()
        self.log.close()
        self.hot.close()
        self.quarantine.close()
        self.catalog.close()
        release_codecs(self._codecs)

    # -- discovery for CLI commands ---------------------------------------------------------
    @property
    def run_file(self) -> Path:
        return self.settings.path("run", "server.json")

    def _write_run_file(self) -> None:
        self.run_file.parent.mkdir(parents=True, exist_ok=True)
        self.run_file.write_text(json.dumps({"url": self.url, "pid": os.getpid()}))

    def _remove_run_file(self) -> None:
        try:
            if json.loads(self.run_file.read_text()).get("pid") == os.getpid():
                self.run_file.unlink()
        except (OSError, ValueError):
            pass

    # -- status -----------------------------------------------------------------------------
    def status(self, tenant: str | None = None) -> dict[str, Any]:
        """Pipeline figures (process-wide) and the quarantine count of `tenant`."""
        stats = self.log.stats()
        acked = stats.acked.get(self.worker.consumer, 0)
        oldest = stats.oldest_unacked_us
        worker = asdict(self.worker.stats)
        for key in ("last_hot_commit", "last_lake_commit"):
            if worker[key] is not None:
                worker[key] = worker[key].isoformat()
        return {
            "started_at": self.started_at.isoformat(),
            "log": {"last_offset": stats.last_offset, "acked_offset": acked,
                    "backlog": stats.last_offset - acked, "stored_bytes": stats.stored_bytes,
                    "max_bytes": stats.max_bytes,
                    "oldest_unacked_age_seconds": None if oldest is None
                    else round(time.time() - oldest / 1e6, 3)},
            "worker": {**worker, "processed_offset": self.worker.cursor},
            "ingest": asdict(self.counters),
            "mqtt": self.mqtt.status() if self.mqtt is not None else None,
            "quarantine": {"count": self.quarantine.count(tenant)},
        }


def server_url(settings: Settings) -> str | None:
    """The URL of a `sensorlake up` running on this data folder, if any."""
    path = settings.path("run", "server.json")
    try:
        info = json.loads(path.read_text())
        os.kill(int(info["pid"]), 0)
        return str(info["url"])
    except (OSError, ValueError, KeyError):
        return None
