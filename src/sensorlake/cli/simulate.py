"""`sensorlake simulate`: a fleet of simulated devices, and its device types."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

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
from sensorlake.errors import ConfigError, InputError

app = typer.Typer(help="Simulated devices sending to sensorlake (HTTP, MQTT or through edge "
                  "agents), with outages, clock offsets, malformed and duplicate messages.",
                  invoke_without_command=True)


def _outage(spec: str) -> tuple[float, float]:
    start, sep, length = spec.partition(":")
    try:
        if not sep:
            raise ValueError
        return float(start), float(length)
    except ValueError:
        raise InputError(f"--outage '{spec}' must be START:SECONDS, e.g. 10:5") from None


def _credentials(data_dir: Path | None, config: Path | None, tenant: str | None,
                 type_name: str, names: list[str], token: str | None) -> dict[str, str]:
    """One token for all (HTTP), or device tokens registered in the data folder (and kept
    in <data-dir>/simulate/credentials.json, mode 0600, for the next runs)."""
    if token:
        return dict.fromkeys(names, token)
    if data_dir is None:
        raise ConfigError("simulated devices need credentials: pass --token (HTTP, an ingest "
                          "token of the tenant) or --data-dir (devices and device tokens are "
                          "registered there; MQTT needs this)")
    from sensorlake.ingest.broker_auth import issue_device_token
    from sensorlake.registry import Device, DeviceRegistry
    from sensorlake.runtime import open_catalog

    settings = settings_from(data_dir, config)
    tenant = tenant or settings.default_tenant
    path = settings.path("simulate", "credentials.json")
    saved = json.loads(path.read_text()) if path.exists() else {}
    missing = [n for n in names if f"{tenant}/{n}" not in saved]
    if missing:
        catalog = open_catalog(settings)
        try:
            DeviceRegistry(catalog).upsert([Device(id=n, tenant=tenant, type=type_name)
                                            for n in missing])
            saved |= {f"{tenant}/{n}": issue_device_token(catalog, tenant, n, "simulator")
                      for n in missing}
        finally:
            catalog.close()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(saved, handle)
        err_console.print(f"registered {len(missing)} simulated devices with their tokens; "
                          "for an MQTT target regenerate the broker config "
                          "(`sensorlake mosquitto-config --out DIR --reload`)")
    return {n: saved[f"{tenant}/{n}"] for n in names}


@app.callback()
def simulate(
    ctx: typer.Context,
    devices: Annotated[int, typer.Option(help="Number of devices.", min=1, max=10_000)] = 10,
    rate: Annotated[float | None, typer.Option(
        help="Messages per second per device (default: one per interval_seconds of the "
        "type).", min=0.001)] = None,
    type_: Annotated[str, typer.Option("--type", help="Device type: a built-in name "
                                       "(`sensorlake simulate types`) or a YAML/JSON file.")]
    = "air_quality",
    target: Annotated[str | None, typer.Option(
        help="http://host:8750 or mqtt://host:1883.")] = None,
    seconds: Annotated[float, typer.Option(help="How long to send.", min=0)] = 10,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same readings).")] = 7,
    report: Annotated[Path | None, typer.Option(
        help="Write the per-device report (sent, acked, lost) as JSON here.")] = None,
    via_edge: Annotated[Path | None, typer.Option(
        help="Send through edge agents whose outboxes live in this folder.")] = None,
    outage: Annotated[list[str] | None, typer.Option(
        help="START:SECONDS since the start when devices are offline (repeatable).")] = None,
    clock_offset: Annotated[float, typer.Option(help="Seconds added to device clocks.")] = 0,
    malformed: Annotated[float, typer.Option(help="Fraction of broken messages.", min=0,
                                             max=1)] = 0,
    duplicates: Annotated[float, typer.Option(help="Fraction of messages sent twice.",
                                              min=0, max=1)] = 0,
    prefix: Annotated[str | None, typer.Option(
        help="Device id prefix (default: the type name, e.g. energy-meter-0001).")] = None,
    token: Annotated[str | None, typer.Option(
        envvar="SENSORLAKE_SIMULATE_TOKEN", show_envvar=True,
        help="An ingest token of the tenant for every device (HTTP only).")] = None,
    tenant: TenantOption = None, data_dir: DataDirOption = None, config: ConfigOption = None,
) -> None:
    """Simulate a fleet and report, per device, what was sent and acknowledged."""
    if ctx.invoked_subcommand is not None:
        return
    from sensorlake.edge.device_types import load_type
    from sensorlake.edge.simulate import FleetSimulator, Scenario, summary

    with friendly_errors():
        if not target:
            raise ConfigError("pass --target http://host:8750 or mqtt://host:1883")
        device_type = load_type(type_)
        stem = prefix or device_type.name.replace("_", "-")
        names = [f"{stem}-{i:04d}" for i in range(1, devices + 1)]
        creds = _credentials(data_dir, config, tenant, device_type.name, names, token)
        scenario = Scenario([_outage(o) for o in outage or []], clock_offset, malformed,
                            duplicates)
        state = (data_dir or Path(".")) / "simulate" / f"seqs-{stem}.json"
        rate = rate or 1 / device_type.interval_seconds
        sim = FleetSimulator(device_type, names, target, creds, rate, scenario, seed,
                             via_edge, state)
    try:
        with Progress(TextColumn("[bold]simulate[/bold]"), BarColumn(),
                      TextColumn("{task.description}"), TimeRemainingColumn(),
                      console=console, transient=True) as progress:
            task = progress.add_task("", total=seconds)

            def tick(elapsed: float) -> None:
                sent = sum(r.sent for r in sim.reports.values())
                progress.update(task, completed=elapsed, description=f"sent {sent:,}")

            reports = sim.run(seconds, tick)
    finally:
        sim.close()
    result = summary(reports)
    if report:
        report.write_text(json.dumps(result, indent=2))
    totals = result["totals"]
    console.print(f"{devices} {device_type.name} devices: generated {totals['generated']:,}, "
                  f"sent {totals['sent']:,}, acknowledged {totals['acked']:,}, lost "
                  f"{totals['lost']:,} (not sent while offline {totals['not_sent']:,}, "
                  f"malformed {totals['malformed']:,}, duplicates {totals['duplicates']:,})",
                  highlight=False, soft_wrap=True)


@app.command("types")
def types(fmt: FormatOption = OutputFormat.table) -> None:
    """The built-in device types and their metrics."""
    from sensorlake.edge.device_types import builtin_names, load_type

    rows = []
    for name in builtin_names():
        kind = load_type(name)
        rows.append({"name": name, "interval_seconds": kind.interval_seconds,
                     "attributes": ", ".join(kind.attributes), "description": kind.description})
    render(rows, ["name", "interval_seconds", "attributes", "description"], fmt)


@app.command("export-type")
def export_type(name: Annotated[str, typer.Argument(help="Built-in type name or a file.")]
                ) -> None:
    """Print a device type as YAML (edit it, then pass the file to --type)."""
    from sensorlake.edge.device_types import export_type as dump
    from sensorlake.edge.device_types import load_type

    with friendly_errors():
        typer.echo(dump(load_type(name)), nl=False)
