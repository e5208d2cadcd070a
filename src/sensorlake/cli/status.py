"""`sensorlake status`: is sensorlake healthy, and if not, what to do (also `--watch`)."""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from typing import Annotated, Any

import httpx
import orjson
import typer
from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from sensorlake.auth.tokens import Role, TokenStore
from sensorlake.cli.common import (
    ConfigOption,
    DataDirOption,
    FormatOption,
    OutputFormat,
    TenantOption,
    console,
    friendly_errors,
    render,
    settings_from,
)
from sensorlake.config import Settings
from sensorlake.errors import SensorlakeError
from sensorlake.ops.status import human_bytes, human_seconds
from sensorlake.runtime import open_catalog, server_url

SAMPLE_SECONDS = 2.1
"""Server profile: seconds between the two samples of the stream (ingest rate)."""


class StatusSource:
    """Where the status comes from: the running sensorlake's API (with a token valid for an
    hour, revoked at the end), or, when none runs, the stores on disk. Server profile: the
    services themselves (NATS, PostgreSQL, ops.db), whatever process runs where."""

    def __init__(self, settings: Settings, tenant: str) -> None:
        self.settings, self.tenant = settings, tenant
        self.server = settings.profile == "server"
        self.url = None if self.server else server_url(settings)
        self._token: tuple[str, str] | None = None
        self._runtime: Any = None
        self._http: httpx.Client | None = None
        """One connection for every refresh of `--watch` (a new client per call costs tens
        of ms of CPU: it builds a TLS context)."""

    def fetch(self) -> dict[str, Any]:
        if self.server:
            return self._deployment()
        if self.url:
            return self._remote()
        return offline_status(self.settings, self.tenant)

    def _deployment(self) -> dict[str, Any]:
        """The server deployment's status, as its api processes compute it; the first call
        samples the stream twice, SAMPLE_SECONDS apart, for the ingest rate."""
        from sensorlake.ops.status import build_status
        from sensorlake.server.runtime import ServerRuntime
        if self._runtime is None:
            self._runtime = ServerRuntime(self.settings, {"api", "ingest"})
            self._runtime.ops.current_rates(self._runtime.ops.counters())
            time.sleep(SAMPLE_SECONDS)
        doc = build_status(self._runtime, self.tenant)
        doc["running"] = self._runtime.ops.worker_alive()
        return doc

    def _remote(self) -> dict[str, Any]:
        if self._token is None:
            token, info = TokenStore(open_catalog(self.settings)).create(
                Role.OWNER, self.tenant, label="cli status", expires_in=timedelta(hours=1))
            self._token = (token, info.id)
        if self._http is None:
            self._http = httpx.Client(timeout=30)
        try:
            response = self._http.get(f"{self.url}/api/v1/status",
                                      headers={"Authorization": f"Bearer {self._token[0]}"})
        except httpx.HTTPError as exc:
            raise SensorlakeError(f"the running sensorlake at {self.url} did not answer "
                                  f"({exc}); is it still up?") from None
        if response.status_code != 200:
            raise SensorlakeError(f"{self.url} answered {response.status_code}: "
                                  f"{response.text[:200]}")
        return response.json()

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
        if self._runtime is not None:
            self._runtime.close()
        if self._token is not None:
            TokenStore(open_catalog(self.settings)).revoke(self._token[1])


def offline_status(settings: Settings, tenant: str) -> dict[str, Any]:
    """The status from the files when sensorlake is not running on the data folder."""
    from sensorlake.ops.status import build_status
    from sensorlake.runtime import Runtime
    if not settings.path("log", "log.db").exists():
        raise SensorlakeError(f"nothing has run on {settings.data_dir} yet: start "
                              f"`sensorlake up --data-dir {settings.data_dir}`")
    runtime = Runtime(settings)
    try:
        doc = build_status(runtime, tenant)
    finally:
        runtime.close()
    for item in doc["problems"]:
        if item["what"].startswith("the worker is not running"):
            item["what"] = (f"sensorlake is not running on {settings.data_dir}: nothing is "
                            "received or stored")
            item["do"] = f"start it: `sensorlake up --data-dir {settings.data_dir}`"
    doc["problems"] = [p for p in doc["problems"]
                       if not p["what"].startswith("the scheduler is not running")]
    doc["running"] = False
    return doc


def flatten(doc: Any, prefix: str = "") -> list[dict[str, Any]]:
    if isinstance(doc, dict):
        return [row for k, v in doc.items() for row in flatten(v, f"{prefix}{k}.")]
    if isinstance(doc, list):
        return [row for i, v in enumerate(doc) for row in flatten(v, f"{prefix}{i}.")]
    return [{"key": prefix.rstrip("."), "value": doc}]


def view(doc: dict[str, Any]) -> Group:
    """The rich view of a status document."""
    parts: list[Any] = []
    problems = doc.get("problems", [])
    if not problems:
        parts.append(Text("● healthy: nothing to do", style="bold green"))
    for p in problems:
        style = "bold red" if p["severity"] == "error" else "bold yellow"
        parts.append(Text.assemble(("● " + p["what"], style), ("\n  → " + p["do"], "")))
    rates, log_ = doc.get("rates", {}), doc["log"]
    eta = log_.get("eta_seconds")
    cap = log_.get("eta_at_capacity_seconds")
    pipe = Table.grid(padding=(0, 2))
    pipe.add_row("ingest", f"{rates.get('ingest_messages_per_second', 0):,.1f} msg/s")
    pipe.add_row("worker", f"{rates.get('messages_per_second', 0):,.1f} msg/s · "
                 f"{rates.get('readings_per_second', 0):,.1f} readings/s · "
                 f"{rates.get('rejects_per_second', 0):,.2f} quarantined/s "
                 f"(last {rates.get('window_seconds', 0):.0f} s)")
    pipe.add_row("log", f"{log_.get('to_process', 0):,} to process · {log_['backlog']:,} "
                 f"not yet in the lake · oldest "
                 f"{_age(log_['oldest_unacked_age_seconds'])} · "
                 f"{human_bytes(log_['stored_bytes'])} of {human_bytes(log_['max_bytes'])}")
    pipe.add_row("ETA", ("drained" if eta == 0 else human_seconds(eta) if eta is not None
                         else "not draining") + ("" if cap in (None, 0) else
                                                 f" (at full speed {human_seconds(cap)})"))
    sinks = doc.get("sinks", {})
    pipe.add_row("sinks", f"hot {_when(sinks.get('hot', {}).get('last_commit'))} · lake "
                 f"{_when(sinks.get('lake', {}).get('last_commit'))}")
    disk = doc.get("disk", {})
    if disk:
        left = disk.get("hours_left")
        pipe.add_row("disk", f"{human_bytes(disk['free_bytes'])} free of "
                     f"{human_bytes(disk['total_bytes'])}" + (
                         f" · about {left:,.0f} hours left" if left is not None else
                         " · not filling up"))
    parts.append(Panel(pipe, title="pipeline", title_align="left"))
    stages = doc.get("stages", [])
    if stages:
        table = Table(title="stages (last minute)", title_justify="left")
        for column in ("stage", "per second", "busy", "total", "capacity/s"):
            table.add_column(column, justify="left" if column == "stage" else "right")
        for s in stages:
            table.add_row(s["stage"], f"{s['per_second']:,.1f} {s['unit']}",
                          f"{s['busy_percent']:.1f}%", f"{s['rows_total']:,}",
                          f"{s['capacity_per_second'] or 0:,.0f}")
        parts.append(table)
    reasons = doc.get("quarantine", {}).get("top_reasons", [])
    if reasons:
        table = Table(title=f"quarantine ({doc['quarantine']['count']:,} rows)",
                      title_justify="left")
        for column in ("count", "problem", "what to do"):
            table.add_column(column)
        for r in reasons:
            table.add_row(f"{r['count']:,}", escape(r["what"]), escape(r["do"]))
        parts.append(table)
    processes = [p for p in doc.get("processes", []) if p["alive"]]
    if processes:  # server profile: every process that reported recently
        counts: dict[str, int] = {}
        for p in processes:
            name = "+".join(p["roles"])
            counts[name] = counts.get(name, 0) + 1
        parts.append(Text("processes: " + " · ".join(f"{name} ×{n}" for name, n in sorted(
            counts.items())), style="dim"))
    jobs = doc.get("jobs", {})
    if jobs.get("last"):
        line = " · ".join(f"{name} {run['status']}" for name, run in jobs["last"].items())
        parts.append(Text(f"jobs ({jobs.get('scheduler')}): {line}", style="dim"))
    return Group(*parts)


def _age(seconds: float | None) -> str:
    return "none waiting" if seconds is None else human_seconds(seconds)


def _when(iso: str | None) -> str:
    return "never" if not iso else iso.replace("+00:00", "Z")


def status(
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes with --watch.",
                                            min=0.2)] = 2.0,
    seconds: Annotated[float, typer.Option(help="With --watch: stop after this many seconds "
                                           "(0 = until Ctrl-C).", min=0)] = 0,
    tenant: TenantOption = None, fmt: FormatOption = OutputFormat.table,
    data_dir: DataDirOption = None, config: ConfigOption = None,
) -> None:
    """Is sensorlake healthy? Rates, backlog and ETA, sinks, quarantine, disk, silent
    devices, alerts and jobs, and for each problem what to do. Exit status 1 on errors."""
    with friendly_errors():
        settings = settings_from(data_dir, config)
        source = StatusSource(settings, tenant or settings.default_tenant)
        try:
            doc = source.fetch()
            if watch and fmt is OutputFormat.table:
                _watch(source, doc, interval, seconds)
                return
            _print(doc, fmt)
        finally:
            source.close()
    if any(p["severity"] == "error" for p in doc["problems"]):
        raise typer.Exit(1)


def _print(doc: dict[str, Any], fmt: OutputFormat) -> None:
    if fmt is OutputFormat.json:
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif fmt is OutputFormat.csv:
        render(flatten(doc), ["key", "value"], fmt)
    else:
        console.print(view(doc))


def _watch(source: StatusSource, doc: dict[str, Any], interval: float, seconds: float) -> None:
    start = time.monotonic()
    with Live(view(doc), console=console, refresh_per_second=4, screen=False) as live:
        try:
            while not seconds or time.monotonic() - start < seconds:
                time.sleep(interval)
                live.update(view(source.fetch()))
        except KeyboardInterrupt:
            pass
