"""`sensorlake devices add|list|import|remove`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sensorlake.auth.audit import AuditLog
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
from sensorlake.errors import InputError
from sensorlake.registry import Calibration, Device, DeviceRegistry
from sensorlake.runtime import open_catalog

app = typer.Typer(help="Register and list devices.", no_args_is_help=True)

COLUMNS = ["tenant", "id", "type", "name", "lat", "lon", "alt", "public", "tags", "calibration"]


def _registry(data_dir: Path | None, config: Path | None) -> tuple[DeviceRegistry, str]:
    settings = settings_from(data_dir, config)
    return DeviceRegistry(open_catalog(settings)), settings.default_tenant


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"{what} '{item}' must look like key=value")
        out[key] = value
    return out


@app.command("add")
def add(
    device_id: Annotated[str, typer.Argument(help="Device id, unique in its tenant.")],
    type_: Annotated[str, typer.Option("--type", help="Device type.")] = "generic",
    name: Annotated[str, typer.Option(help="Human-readable name.")] = "",
    lat: Annotated[float | None, typer.Option(help="Static latitude.")] = None,
    lon: Annotated[float | None, typer.Option(help="Static longitude.")] = None,
    alt: Annotated[float | None, typer.Option(help="Static altitude (m).")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="Tag key=value (repeatable).")] = None,
    calibrate: Annotated[list[str] | None, typer.Option(
        help="metric=scale,offset (repeatable), e.g. pm2_5=1.1,-0.5")] = None,
    public: Annotated[bool, typer.Option(
        "--public", help="Show it to everyone (public map and latest values).")] = False,
    tenant: TenantOption = None, data_dir: DataDirOption = None, config: ConfigOption = None,
) -> None:
    """Register a device (or update it if it exists)."""
    with friendly_errors():
        registry, default_tenant = _registry(data_dir, config)
        calibration = {}
        for metric, spec in _pairs(calibrate or [], "--calibrate").items():
            scale, _, offset = spec.partition(",")
            try:
                calibration[metric] = Calibration(scale=float(scale),
                                                  offset=float(offset or 0))
            except ValueError:
                raise InputError(f"--calibrate {metric}={spec}: expected scale,offset "
                                 "numbers") from None
        try:
            device = Device(id=device_id, tenant=tenant or default_tenant, type=type_,
                            name=name, lat=lat, lon=lon, alt=alt,
                            tags=_pairs(tag or [], "--tag"), calibration=calibration,
                            public=public)
        except ValueError as exc:
            raise InputError(f"device '{device_id}': {exc}") from None
        registry.add(device)
        AuditLog(registry.catalog).record(device.tenant, "cli", "device.add", device.id,
                                          public=public)
        console.print(f"device [bold]{device.id}[/bold] registered in tenant {device.tenant}")


@app.command("list")
def list_(tenant: TenantOption = None, all_tenants: Annotated[bool, typer.Option(
    "--all-tenants", help="List every tenant's devices.")] = False,
          fmt: FormatOption = OutputFormat.table, data_dir: DataDirOption = None,
          config: ConfigOption = None) -> None:
    """List registered devices."""
    with friendly_errors():
        registry, default_tenant = _registry(data_dir, config)
        devices = registry.list(None if all_tenants else tenant or default_tenant)
        rows = [d.model_dump() for d in devices]
        for row in rows:
            row["calibration"] = {k: v for k, v in row["calibration"].items()} or None
            row["tags"] = row["tags"] or None
        render(rows, COLUMNS, fmt, title=f"{len(rows)} devices")


@app.command("import")
def import_(path: Annotated[Path, typer.Argument(help="devices.yaml (or .json).",
                                                 exists=True, dir_okay=False)],
            tenant: TenantOption = None, data_dir: DataDirOption = None,
            config: ConfigOption = None) -> None:
    """Register (or update) every device of a YAML/JSON file.

    The file is a list of devices, or a mapping with a `devices:` list. Each device has
    `id` and optionally tenant, type, name, lat, lon, alt, tags {k: v} and calibration
    {metric: {scale, offset}}.
    """
    with friendly_errors():
        registry, default_tenant = _registry(data_dir, config)
        devices = registry.import_file(path, tenant or default_tenant)
        console.print(f"imported {len(devices)} devices from {path}")


@app.command("remove")
def remove(device_id: str, tenant: TenantOption = None, data_dir: DataDirOption = None,
           config: ConfigOption = None) -> None:
    """Remove a device from the registry (its stored readings stay)."""
    with friendly_errors():
        registry, default_tenant = _registry(data_dir, config)
        registry.remove(tenant or default_tenant, device_id)
        AuditLog(registry.catalog).record(tenant or default_tenant, "cli", "device.remove",
                                          device_id)
        console.print(f"device {device_id} removed")
