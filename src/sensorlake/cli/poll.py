"""`sensorlake poll sensor-community`: fetch Sensor.Community open data now, or on a schedule.

With `sensorlake up` running on the data folder, the poller delivers to it over HTTP (with
`--token`, or a temporary ingest token it creates and revokes). Otherwise it runs the
pipeline itself: the log, the worker and the stores of the data folder, until the records
are stored (`--once`) or until Ctrl-C.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from sensorlake.auth.tokens import Role, TokenStore
from sensorlake.cli.common import (
    ConfigOption,
    DataDirOption,
    FormatOption,
    OutputFormat,
    TenantOption,
    console,
    err_console,
    friendly_errors,
    render,
    settings_from,
)
from sensorlake.config import Settings
from sensorlake.errors import TransientError
from sensorlake.ingest.pollers.sensor_community import (
    PollResult,
    RuntimeTarget,
    ServerTarget,
    Target,
    fetch,
    poll_once,
)
from sensorlake.runtime import Runtime, open_catalog, server_url

app = typer.Typer(help="Fetch readings from sources sensorlake polls.", no_args_is_help=True)

COLUMNS = ["time", "records", "new", "seen", "sensors_registered", "unusable"]
TOKEN_DAYS = 1
DRAIN_SECONDS = 300


class TemporaryToken:
    """An ingest token for a running server, renewed before it expires, revoked at the end."""

    def __init__(self, settings: Settings, tenant: str) -> None:
        self.catalog = open_catalog(settings)
        self.store = TokenStore(self.catalog)
        self.tenant = tenant
        self.token, self.id, self.made = "", "", 0.0
        self.renew()

    def renew(self) -> None:
        old = self.id
        self.token, info = self.store.create(
            Role.INGEST, self.tenant, label="sensorlake poll sensor-community (temporary)",
            expires_in=timedelta(days=TOKEN_DAYS))
        self.id, self.made = info.id, time.monotonic()
        if old:
            self.store.revoke(old)

    def current(self) -> str:
        if time.monotonic() - self.made > TOKEN_DAYS * 43_200:
            self.renew()
        return self.token

    def close(self) -> None:
        self.store.revoke(self.id)
        self.catalog.close()


def _drain(runtime: Runtime) -> None:
    """Wait until the worker has stored everything appended so far."""
    last = runtime.log.stats().last_offset
    deadline = time.monotonic() + DRAIN_SECONDS
    while runtime.worker.cursor < last and time.monotonic() < deadline:
        time.sleep(0.05)


def _row(result: PollResult) -> dict[str, object]:
    return {"time": datetime.now(UTC).replace(microsecond=0), **result.row()}


def _wait(seconds: float) -> None:
    with Progress(TextColumn("[dim]next poll[/dim]"), BarColumn(), TimeRemainingColumn(),
                  console=err_console, transient=True) as progress:
        task = progress.add_task("", total=seconds)
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < seconds:
            progress.update(task, completed=elapsed)
            time.sleep(min(0.5, seconds - elapsed))


@app.command("sensor-community")
def sensor_community(
    url: Annotated[str | None, typer.Option(
        "--url", envvar="SENSORLAKE_SENSOR_COMMUNITY__URL", show_envvar=True,
        help="Open-data file to read (default: sensor_community.url).")] = None,
    once: Annotated[bool, typer.Option(
        "--once", help="Poll once, wait until stored, and exit.")] = False,
    interval: Annotated[float | None, typer.Option(
        "--interval", envvar="SENSORLAKE_SENSOR_COMMUNITY__INTERVAL_SECONDS", show_envvar=True,
        min=1, help="Seconds between polls (default: sensor_community.interval_seconds).")
    ] = None,
    token: Annotated[str | None, typer.Option(
        "--token", envvar="SENSORLAKE_TOKEN", show_envvar=True,
        help="Ingest token for a running `sensorlake up` (default: a temporary one).")
    ] = None,
    tenant: TenantOption = None, data_dir: DataDirOption = None, config: ConfigOption = None,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Store Sensor.Community open data, once or on a schedule.

    P1 -> pm10, P2 -> pm2_5, P0 -> pm1, pressure in hPa; sensors are registered as
    sc-<sensor id> with their location; a record already stored is not stored again.
    """
    runtime: Runtime | None = None
    temporary: TemporaryToken | None = None
    with friendly_errors():
        settings = settings_from(data_dir, config)
        every = interval or settings.sensor_community.interval_seconds
        running = server_url(settings)
        target: Target
        first = fetch(url or settings.sensor_community.url,
                      settings.sensor_community.timeout_seconds) if once else None
        if running:
            if token is None:
                temporary = TemporaryToken(settings, tenant or settings.default_tenant)
            target = ServerTarget(running, token or (temporary.token if temporary else ""))
        else:
            runtime = Runtime(settings)
            runtime.start_worker()
            target = RuntimeTarget(runtime, tenant)
        try:
            while True:
                if temporary is not None and isinstance(target, ServerTarget):
                    target.token = temporary.current()
                try:
                    result = (target.deliver(first, f"poll:{url or settings.sensor_community.url}")
                              if first is not None else poll_once(settings, target, url=url))
                except TransientError as exc:
                    if once:
                        raise
                    err_console.print(f"[yellow]poll failed, retrying at the next poll:"
                                      f"[/yellow] {exc}")
                else:
                    if runtime is not None:
                        _drain(runtime)
                    if once:
                        render([_row(result)], COLUMNS, fmt)
                        break
                    row = _row(result)
                    console.print(f"{row['time']:%H:%M:%S} polled {result.records:,} "
                                  f"records: {result.new:,} new, {result.seen:,} already "
                                  f"stored, {result.sensors_registered:,} sensors registered",
                                  highlight=False)
                try:
                    _wait(every)
                except KeyboardInterrupt:
                    break
        finally:
            if runtime is not None:
                runtime.close()
            if temporary is not None:
                temporary.close()
