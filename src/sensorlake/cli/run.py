"""`sensorlake up` and `sensorlake demo`: the one-process runtime, with or without simulator."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from sensorlake.auth.tokens import Role
from sensorlake.cli.common import (
    ConfigOption,
    DataDirOption,
    console,
    friendly_errors,
    settings_from,
)
from sensorlake.cli.demo_feed import DemoFeed, latest_rows, summary_table
from sensorlake.errors import ConfigError
from sensorlake.runtime import Runtime, server_url
from sensorlake.simulator import fleet
from sensorlake.tuning import tune_for_service

PortOption = Annotated[int | None, typer.Option(
    "--port", envvar="SENSORLAKE_HTTP__PORT", show_envvar=True, help="HTTP port (default 8750).")]
HostOption = Annotated[str | None, typer.Option(
    "--host", envvar="SENSORLAKE_HTTP__HOST", show_envvar=True,
    help="HTTP address (default 127.0.0.1).")]


def _check_port(host: str, port: int) -> None:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            raise ConfigError(f"port {port} on {host} is already in use: stop what uses it or "
                              "pass --port") from None


def _open(data_dir: Path | None, config: Path | None, host: str | None,
          port: int | None) -> Runtime:
    settings = settings_from(data_dir, config)
    if server_url(settings):
        raise ConfigError(f"sensorlake is already running on {settings.data_dir} "
                          f"({server_url(settings)}): stop it first or use another --data-dir")
    _check_port(host or settings.http.host, settings.http.port if port is None else port)
    runtime = Runtime(settings)
    tune_for_service()
    return runtime


def up(data_dir: DataDirOption = None, config: ConfigOption = None, host: HostOption = None,
       port: PortOption = None) -> None:
    """Run ingest, the worker and the API in one process until Ctrl-C (or SIGTERM)."""
    with friendly_errors():
        settings = settings_from(data_dir, config)
        if settings.profile == "server":  # NATS, PostgreSQL, S3
            from sensorlake.cli.roles import serve_roles
            roles = {"ingest", "worker", "api"} | ({"scheduler"} if settings.jobs.enabled
                                                   else set())
            return serve_roles(settings, roles, host, port, mqtt=True)
        runtime = _open(data_dir, config, host, port)

    def started(rt: Runtime) -> None:
        console.print(f"sensorlake is up: [bold]{rt.url}[/bold] (data in "
                      f"{rt.settings.data_dir.resolve()}); Ctrl-C stops it cleanly")
        if rt.mqtt is not None:
            console.print(f"  MQTT ingest from {rt.mqtt.broker} as {rt.mqtt.client_id}",
                          highlight=False)

    runtime.start_worker()
    with friendly_errors():
        runtime.start_mqtt()
    runtime.serve(host, port, on_started=started)


def demo(
    devices: Annotated[int, typer.Option(help="Simulated air-quality devices.", min=1,
                                         max=10_000)] = 20,
    seconds: Annotated[float, typer.Option(
        help="Stop by itself after this many seconds (0 = run until Ctrl-C).", min=0)] = 0,
    data_dir: DataDirOption = None, config: ConfigOption = None, host: HostOption = None,
    port: PortOption = None,
) -> None:
    """Run sensorlake with simulated air-quality sensors posting over HTTP, 1 message/s each.

    Run it again with the same --data-dir and it continues where it stopped.
    """
    with friendly_errors():
        runtime = _open(data_dir, config, host, port)
    settings = runtime.settings
    sims = fleet(devices, settings.default_tenant)
    runtime.registry.upsert([s.device.model_copy(update={"public": True}) for s in sims])
    owner_token, _ = runtime.tokens.create(Role.OWNER, settings.default_tenant, label="demo")
    dashboard_login = demo_user(runtime)
    ingest_token, _ = runtime.tokens.create(Role.INGEST, settings.default_tenant,
                                            label="demo simulator")
    feed = DemoFeed(runtime, sims, ingest_token)

    def started(rt: Runtime) -> None:
        feed.start(rt.url or "")
        console.print(f"[bold]sensorlake demo[/bold]: {devices} simulated devices posting to "
                      f"{rt.url} · data in {settings.data_dir.resolve()}", highlight=False)
        console.print(f"  [dim]{'dashboard':<12}[/dim]{rt.url}/  (sign in as {dashboard_login})",
                      soft_wrap=True, highlight=False)
        console.print(f"  [dim]{'owner token':<12}[/dim]{owner_token}\n  [dim]{'try':<12}[/dim]"
                      f"curl -s -H 'Authorization: Bearer {owner_token}' "
                      f"'{rt.url}/api/v1/latest?metric=pm2_5'", soft_wrap=True,
                      highlight=False)
        threading.Thread(target=_watch, args=(rt, feed, seconds), daemon=True).start()

    runtime.start_worker()
    runtime.serve(host, port, on_started=started)
    feed.stop()
    console.print(summary_table(runtime, feed))
    data = settings.data_dir
    lake_sql = ("select metric, count(*) readings, round(avg(value), 1) mean from read_parquet("
                f"'{data}/lake/readings/**/*.parquet', hive_partitioning=true) group by all")
    console.print("\n[bold]What next[/bold] (the owner token reads the API while "
                  "`sensorlake up` runs):")
    for label, line in [
        ("owner token", owner_token),
        ("query", f"sensorlake query --data-dir {data} --device aq-0001 --metric pm2_5 "
                  "--from -10m --every 1m"),
        ("lake", f'python -c "import duckdb; print(duckdb.sql(\\"{lake_sql}\\"))"'),
        ("serve", f"sensorlake up --data-dir {data}"),
        ("again", f"sensorlake demo --data-dir {data}   # continues where it stopped"),
    ]:
        console.print(f"  [dim]{label:<12}[/dim]{line}", soft_wrap=True, highlight=False)


def demo_user(runtime: Runtime) -> str:
    """An owner user `demo` for the dashboard, with a fresh password each run."""
    import secrets

    users = runtime.auth.users
    tenant = runtime.settings.default_tenant
    if any(u.name == "demo" for u in users.list(tenant)):
        users.remove(tenant, "demo")
    password = secrets.token_urlsafe(9)
    users.add(tenant, "demo", password, Role.OWNER)
    return f"demo / {password}"


def _watch(runtime: Runtime, feed: DemoFeed, seconds: float) -> None:
    """A progress bar with ETA and a live summary; stops the demo after `seconds`."""
    start = time.monotonic()
    total = seconds or None
    with Progress(TextColumn("[bold]demo[/bold]"), BarColumn(), TextColumn("{task.description}"),
                  TimeRemainingColumn(), console=console, transient=True) as progress:
        task = progress.add_task("", total=total)
        while True:
            elapsed = time.monotonic() - start
            stats = runtime.worker.stats
            progress.update(task, completed=elapsed, description=(
                f"sent {feed.sent:,} msgs · acked {feed.acked:,} · stored {stats.stored:,} "
                f"readings · quarantined {stats.rejects:,}"))
            if total is not None and elapsed >= total:
                break
            if feed.failed:
                break
            time.sleep(0.5)
    feed.stop()
    time.sleep(max(runtime.settings.worker.poll_seconds * 2, 0.5))
    try:
        feed.latest = latest_rows(runtime)
    except Exception:  # the summary is a nicety; never block the shutdown on it
        feed.latest = []
    runtime.request_stop()
