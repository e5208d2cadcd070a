"""The server profile's process: any mix of the roles ingest, worker, api and scheduler.

    ServerRuntime(settings, {"ingest"})     HTTP (and MQTT) ingest -> JetStream (no PostgreSQL)
    ServerRuntime(settings, {"worker"})     shared consumer -> PostgreSQL, plus the lake exporter
    ServerRuntime(settings, {"api"})        queries, status, metrics, jobs (PostgreSQL + lake)
    ServerRuntime(settings, {"scheduler"})  the jobs, one process at a time (PostgreSQL lease)
    all of them                             `sensorlake up` with profile = "server"

Every process writes a report of its counters to the process board (`server/board.py`), so
status and metrics of any api process cover the whole deployment (`server/ops.py`).

Every role can run as many processes as wanted; they coordinate only through NATS and
PostgreSQL. The device registry and tokens stay in `<data_dir>/catalog.db` (SQLite in WAL
mode), so processes on one host (or sharing that folder on a local disk) see the same
devices and tokens.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sensorlake.auth.services import AuthServices
from sensorlake.auth.tokens import TokenStore
from sensorlake.config import Settings
from sensorlake.decode.context import configure_codecs, registry_lookup, release_codecs
from sensorlake.ingest.appender import LogAppender
from sensorlake.log.jetstream import JetStreamLog
from sensorlake.log.jetstream_consumer import WorkQueue
from sensorlake.registry import DeviceRegistry
from sensorlake.runtime import IngestCounters, Runtime, open_catalog
from sensorlake.server.exporter import LakeExporter, exported_offset
from sensorlake.server.lease import held_by_anyone
from sensorlake.server.ops import ServerOps
from sensorlake.server.status import process_report, server_status
from sensorlake.server.worker import ServerWorker
from sensorlake.store.base import Lake
from sensorlake.store.lake import ParquetLake
from sensorlake.store.pg_quarantine import PostgresQuarantine
from sensorlake.store.postgres import PostgresStore
from sensorlake.store.s3lake import S3Lake

if TYPE_CHECKING:
    from sensorlake.ingest.mqtt import MqttIngest

log = logging.getLogger(__name__)

ROLES = ("ingest", "worker", "api", "scheduler")
STORE_ROLES = {"worker", "api", "scheduler"}
"""Roles that open PostgreSQL and the lake."""
LOG_ROLES = {"ingest", "worker", "scheduler"}
"""Roles that open the JetStream log (the scheduler appends polls and imports)."""
RETENTION_EVERY_SECONDS = 3600


def open_lake(settings: Settings) -> Lake:
    """S3 when s3.bucket is set, else Parquet under <data_dir>/lake."""
    if settings.s3.bucket:
        return S3Lake(settings.s3, settings.lake)
    return ParquetLake(settings.path("lake"), settings.lake.compression,
                       settings.lake.compression_level)


class ServerRuntime(Runtime):
    """Runtime with server backends; only what the chosen roles need is opened."""

    def __init__(self, settings: Settings, roles: set[str]) -> None:
        unknown = roles - set(ROLES)
        if unknown:
            raise ValueError(f"unknown roles {sorted(unknown)}: use {', '.join(ROLES)}")
        self.settings, self.roles = settings, roles
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.catalog = open_catalog(settings)
        self.registry = DeviceRegistry(self.catalog)
        self.tokens = TokenStore(self.catalog)
        self.auth = AuthServices(self.catalog, self.registry, self.tokens, settings)
        self.mqtt: MqttIngest | None = None
        self.counters = IngestCounters()
        self._codecs = configure_codecs(settings, registry_lookup(self.catalog))
        self.started_at = datetime.now(UTC)
        self._context_lock = threading.Lock()
        self._context_version, self._context, self._context_checked = -1, None, 0.0
        self._stop = threading.Event()
        self._closed = False
        self._server = None
        self.url: str | None = None
        self._threads: list[threading.Thread] = []
        self._worker_thread = None
        self.log: JetStreamLog | None = None
        self.hot: PostgresStore | None = None
        self.quarantine: PostgresQuarantine | None = None
        self.queue: WorkQueue | None = None
        self.worker: ServerWorker | None = None
        self.exporter: LakeExporter | None = None
        self.lake = open_lake(settings) if roles & STORE_ROLES else None
        self.ops: ServerOps | None = None
        try:
            self._open_backends()
            self.ops = ServerOps(self)
        except BaseException:
            self.close()
            raise

    def _open_backends(self) -> None:
        s, roles = self.settings, self.roles
        if roles & LOG_ROLES:
            self.log = JetStreamLog(s.jetstream, s.log.max_bytes, s.log.keep_acked_seconds,
                                    name=f"sensorlake-{'-'.join(sorted(roles))}")
            self.appender = LogAppender(self.log)
        if roles & STORE_ROLES:
            self.hot = PostgresStore(s.postgres, self.lake, s.hot.retention_days)
            self.quarantine = PostgresQuarantine(s.postgres)
        if "worker" in roles:
            assert self.log is not None and self.hot is not None and self.lake is not None
            self.queue = WorkQueue(s.jetstream, s.log.max_bytes)
            self.worker = ServerWorker(s, self.queue, self.hot, self.context,
                                       on_unknown_devices=self._auto_register)
            self.exporter = LakeExporter(s, self.log, self.hot, self.lake)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, mqtt: bool = False) -> None:
        """Start this process's roles: worker threads, reports and the scheduler, and (with
        `mqtt`, ingest role) MQTT ingest when mqtt.url is set."""
        self.start_worker()
        if self.ops is not None:
            self.ops.start()
        if mqtt:
            self.start_mqtt()

    def start_mqtt(self) -> None:
        """MQTT ingest into JetStream (ingest role, `[mqtt] url` set): a PUBACK only after
        the PubAck of the group that carries the message; watermarks from the stream's KV."""
        if self.settings.mqtt.url and self.mqtt is None and self.log is not None \
                and "ingest" in self.roles:
            from sensorlake.ingest.mqtt import MqttIngest
            self.mqtt = MqttIngest(self.settings, self.log)
            self.mqtt.start()

    def start_worker(self) -> None:
        """Start the worker loop, the lake exporter and retention (worker role only)."""
        if self.worker is None or self.exporter is None:
            return
        worker, exporter = self.worker, self.exporter
        self._worker_thread = self._spawn("worker", lambda: worker.run(self._stop))
        self._spawn("lake-exporter", lambda: exporter.run(self._stop))
        self._spawn("retention", self._retention)

    def _spawn(self, name: str, target: Any) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)
        return thread

    def _retention(self) -> None:
        """Hourly retention by the exporter leader, only while no scheduler holds its lease
        (a running scheduler does it as the `retention` job), so it runs once per deployment."""
        last = time.monotonic()
        while not self._stop.wait(5):
            if time.monotonic() - last < RETENTION_EVERY_SECONDS or self.exporter is None:
                continue
            last = time.monotonic()
            try:
                if self.hot is not None and self.exporter.stats.leader and \
                        not held_by_anyone(self.settings.postgres, "scheduler"):
                    self.hot.apply_retention(done_offset=self.exporter.exported())
            except Exception:  # retention must never stop the worker
                log.exception("retention failed; will try again in an hour")

    def exported_offset(self) -> int:
        """Every log offset at or below this is in the lake (PostgreSQL's lake_export)."""
        return exported_offset(self.settings.postgres)

    def report(self) -> dict[str, Any]:
        """This process's report for the process board."""
        return process_report(self)

    def ready(self) -> bool:
        if "worker" in self.roles:
            return self._worker_thread is not None and self._worker_thread.is_alive()
        return True

    def serve(self, host: str | None = None, port: int | None = None,
              on_started: Any = None) -> None:
        """HTTP until SIGINT/SIGTERM: ingest only, or the whole API with the api role."""
        import uvicorn
        host = host or self.settings.http.host
        port = self.settings.http.port if port is None else port
        config = uvicorn.Config(self.app(), host=host, port=port, log_level="warning",
                                access_log=False, lifespan="off", timeout_graceful_shutdown=5)
        self._server = server = uvicorn.Server(config)
        self.url = f"http://{host}:{port}"

        def announce() -> None:
            while not server.started and not self._stop.is_set():
                time.sleep(0.02)
            if server.started:
                self._write_run_file()
                if on_started:
                    on_started(self)

        threading.Thread(target=announce, name="announce", daemon=True).start()
        previous = self._soften_signals()
        try:
            server.run()
        finally:
            self.close()
            import signal
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def app(self) -> Any:
        """The ASGI app of this process's roles."""
        from sensorlake.api.app import create_app
        if "api" in self.roles:
            return create_app(self)
        from fastapi import FastAPI

        from sensorlake.api.deps import json_response
        from sensorlake.api.fastpath import IngestFastPath
        from sensorlake.api.routes import ingest

        app = FastAPI(title="sensorlake ingest")
        app.state.runtime = self
        app.include_router(ingest.router)

        @app.get("/healthz")
        def healthz() -> Any:
            return json_response({"status": "ok", "roles": sorted(self.roles)})
        return IngestFastPath(app, self)

    def _write_run_file(self) -> None:
        if self.roles >= {"ingest", "worker", "api"}:  # `sensorlake up`: found like embedded
            super()._write_run_file()

    def run_until_stopped(self, seconds: float = 0) -> None:
        """For a process without HTTP (worker, scheduler, MQTT-only ingest): wait for
        SIGINT/SIGTERM (or `seconds`), then stop."""
        previous = self._soften_signals()
        started = time.monotonic()
        try:
            while not self._stop.wait(0.5):
                if seconds and time.monotonic() - started >= seconds:
                    break
        finally:
            self.close()
            import signal
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def close(self) -> None:
        """Stop: the worker finishes and acks its batch, the exporter writes what is
        complete; then connections close. MQTT ingest stops first (what it appended
        still reaches the workers), the last report is written after the worker stopped."""
        if self._closed:
            return
        self._closed = True
        if self.mqtt is not None:
            self.mqtt.stop()
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)
        self._remove_run_file()
        if self.ops is not None:
            try:
                self.ops.close()
            except Exception:
                log.exception("closing the operations side failed")
        for closable in (self.queue, self.log, self.hot, self.quarantine):
            if closable is not None:
                try:
                    closable.close()
                except Exception:
                    log.exception("closing %s failed", type(closable).__name__)
        self.catalog.close()
        release_codecs(self._codecs)

    # -- status -----------------------------------------------------------------------------
    def status(self, tenant: str | None = None) -> dict[str, Any]:
        """The deployment's pipeline figures (the board, stream and consumer state)."""
        return server_status(self, tenant)
