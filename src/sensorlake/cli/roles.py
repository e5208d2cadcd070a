"""`sensorlake run ingest|worker|api`: one role of the server profile per process
(`sensorlake run scheduler` is in cli/jobs.py).

Start as many of each as the load needs (workers share one JetStream consumer; ingest and
api processes are stateless behind a load balancer; ingest processes share the MQTT
subscriptions with `mqtt.shared_group`). `sensorlake up` with `profile = "server"` runs every
role in one process.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Annotated

import typer

from sensorlake.cli.common import (
    ConfigOption,
    DataDirOption,
    console,
    err_console,
    friendly_errors,
    settings_from,
)
from sensorlake.cli.run import HostOption, PortOption, _check_port
from sensorlake.cli.run_roles import ClientIdOption, SharedOption, UrlOption, with_mqtt_options
from sensorlake.config import Settings
from sensorlake.errors import ConfigError, TransientError
from sensorlake.tuning import tune_for_service

log = logging.getLogger(__name__)

run_app = typer.Typer(help="Run one role of sensorlake on its own: ingest, worker and api of "
                      "the server profile (NATS JetStream, PostgreSQL, S3; docs/server.md), "
                      "or the scheduler.", no_args_is_help=True)


def _server_settings(data_dir: object, config: object) -> Settings:
    settings = settings_from(data_dir, config)  # type: ignore[arg-type]
    if settings.profile != "server":
        raise ConfigError('`sensorlake run` needs profile = "server" (in the settings file or '
                          "SENSORLAKE_PROFILE=server); for one embedded process use "
                          "`sensorlake up`")
    return settings


def open_runtime(settings: Settings, roles: set[str], wait: Callable[[float], bool]):  # type: ignore[no-untyped-def]
    """Open the backends, retrying while NATS or PostgreSQL is unreachable (a role started
    before its services waits for them instead of exiting)."""
    from sensorlake.server.runtime import ServerRuntime
    delay = 1.0
    while True:
        try:
            return ServerRuntime(settings, roles)
        except TransientError as exc:
            err_console.print(f"[yellow]waiting:[/yellow] {exc}")
            if wait(delay):
                raise typer.Exit(1) from None
            delay = min(delay * 2, 10.0)


def _interruptible() -> tuple[threading.Event, dict[int, object]]:
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in
                (signal.SIGINT, signal.SIGTERM)}
    return stop, previous


def serve_roles(settings: Settings, roles: set[str], host: str | None, port: int | None,
                http: bool | None = None, mqtt: bool = False, seconds: float = 0) -> None:
    """Run `roles` in this process until SIGINT/SIGTERM (or `seconds`), then shut down
    gracefully. `http` defaults to whether ingest or api is among the roles; `mqtt` starts
    MQTT ingest when mqtt.url is set."""
    http = bool(roles & {"ingest", "api"}) if http is None else http
    if http:
        _check_port(host or settings.http.host, settings.http.port if port is None else port)
    stop, previous = _interruptible()
    try:
        runtime = open_runtime(settings, roles, stop.wait)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
    tune_for_service()
    with friendly_errors():
        runtime.start(mqtt=mqtt)
    names = ", ".join(sorted(roles))
    if runtime.mqtt is not None:
        console.print(f"  MQTT ingest from {runtime.mqtt.broker} as {runtime.mqtt.client_id}"
                      + (f" (shared group {settings.mqtt.shared_group})"
                         if settings.mqtt.shared_group else ""), highlight=False)
    if http:
        def started(rt: object) -> None:
            console.print(f"sensorlake {names} is up: [bold]{runtime.url}[/bold]; Ctrl-C or "
                          "SIGTERM stops it cleanly")
        if seconds:
            timer = threading.Timer(seconds, runtime.request_stop)
            timer.daemon = True
            timer.start()
        runtime.serve(host, port, on_started=started)
    else:
        console.print(f"sensorlake {names} is running ({time.strftime('%H:%M:%S')}); Ctrl-C or "
                      "SIGTERM finishes the work in hand, acknowledges it and exits")
        runtime.run_until_stopped(seconds)


def ingest(mqtt_url: UrlOption = None, client_id: ClientIdOption = None,
           shared_group: SharedOption = None,
           seconds: Annotated[float, typer.Option(
               help="Stop by itself after this many seconds (0 = until Ctrl-C/SIGTERM).",
               min=0)] = 0,
           http: Annotated[bool, typer.Option(
               "--http/--no-http", help="Server profile: serve HTTP ingest too (with "
               "--no-http, MQTT ingest only and no port).")] = True,
           config: ConfigOption = None, data_dir: DataDirOption = None,
           host: HostOption = None, port: PortOption = None) -> None:
    """Ingest as a process of its own. Embedded profile: MQTT broker -> log (PUBACK after
    the durable append). Server profile: HTTP ingest and, with mqtt.url, MQTT ingest ->
    JetStream: 200 or PUBACK only after the PubAck."""
    with friendly_errors():
        settings = settings_from(data_dir, config)
        if settings.profile != "server":
            from sensorlake.cli import run_roles
            run_roles.ingest(mqtt_url, client_id, shared_group, seconds, data_dir, config)
            return
        settings = with_mqtt_options(settings, mqtt_url, client_id, shared_group)
        if not http and not settings.mqtt.url:
            raise ConfigError("--no-http leaves nothing to ingest from: set [mqtt] url, "
                              "SENSORLAKE_MQTT__URL or --mqtt-url, or drop --no-http")
        serve_roles(settings, {"ingest"}, host, port, http=http, mqtt=True, seconds=seconds)


@run_app.command("worker")
def worker(config: ConfigOption = None, data_dir: DataDirOption = None) -> None:
    """A worker: shared JetStream consumer -> stages -> PostgreSQL; exports the lake when it
    holds the exporter lock."""
    with friendly_errors():
        settings = _server_settings(data_dir, config)
        serve_roles(settings, {"worker"}, None, None)


@run_app.command("api")
def api(config: ConfigOption = None, data_dir: DataDirOption = None,
        host: HostOption = None, port: PortOption = None) -> None:
    """The query API (readings, latest, status, metrics, jobs, alerts, quarantine) and HTTP
    ingest, on PostgreSQL; status and /metrics cover every process of the deployment."""
    with friendly_errors():
        settings = _server_settings(data_dir, config)
        serve_roles(settings, {"api", "ingest"}, host, port)
