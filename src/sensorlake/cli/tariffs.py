"""`sensorlake tariffs check`: validate a tariffs file and print a week's price schedule."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import polars as pl
import typer

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
from sensorlake.derived.timezones import TZ_TAG, device_timezone, zone
from sensorlake.errors import ConfigError, InputError
from sensorlake.tariffs import (
    DAY_NAMES,
    SITE_TAG,
    TariffBook,
    load_tariffs,
    price_expr,
    tariffs_path,
)
from sensorlake.timeparse import format_duration

app = typer.Typer(help="Check tariffs (tariffs.yaml) and show their price schedules.",
                  no_args_is_help=True)


def week_schedule(book: TariffBook, tariff: str, monday: date) -> tuple[list[str],
                                                                         list[dict[str, Any]]]:
    """Rows of constant prices over the week starting `monday`: `from`, `to` (local wall
    clock) and one price per day, computed with the same lookup as `cost`."""
    days = [monday + timedelta(days=i) for i in range(7)]
    labels = [f"{DAY_NAMES[d.weekday()].title()} {d:%d %b}" for d in days]
    grid = pl.DataFrame({"day": range(7), "weekday": [d.isoweekday() for d in days],
                         "month": [d.month for d in days]}, schema={
        "day": pl.Int8, "weekday": pl.Int8, "month": pl.Int8}).join(
        pl.DataFrame({"minute": range(1440)}, schema={"minute": pl.Int16}), how="cross")
    priced = grid.with_columns(pl.lit(tariff).alias("tariff")).with_columns(
        price_expr(book).alias("price"))
    wide = priced.pivot(on="day", index="minute", values="price").sort("minute")
    wide = wide.rename({str(i): labels[i] for i in range(7)})
    changed = pl.any_horizontal([pl.col(c).ne_missing(pl.col(c).shift(1)) for c in labels])
    segments = wide.with_columns(changed.fill_null(True).cum_sum().alias("segment")).group_by(
        "segment", maintain_order=True).agg(pl.col("minute").first().alias("start"),
                                            pl.col("minute").last().alias("stop"),
                                            *(pl.col(c).first() for c in labels))
    rows = []
    for row in segments.iter_rows(named=True):
        stop = row["stop"] + 1
        rows.append({"from": f"{row['start'] // 60:02d}:{row['start'] % 60:02d}",
                     "to": f"{stop // 60:02d}:{stop % 60:02d}",
                     **{c: row[c] for c in labels}})
    return ["from", "to", *labels], rows


def _tags_of(settings: Any, tenant: str, device: str) -> dict[str, str]:
    """The registered device's tags, when the data folder has a catalog with it."""
    if not settings.path("catalog.db").exists():
        return {}
    from sensorlake.registry import DeviceRegistry
    from sensorlake.runtime import open_catalog

    try:
        return dict(DeviceRegistry(open_catalog(settings)).get(tenant, device).tags)
    except Exception:  # an unregistered device is resolved from the flags
        return {}


@app.command("check")
def check(
    file: Annotated[Path | None, typer.Argument(
        help="The tariffs file (default: energy.tariffs_file, else <data_dir>/tariffs.yaml).",
        show_default=False)] = None,
    tariff: Annotated[str | None, typer.Option(
        "--tariff", help="Show this tariff's schedule (default: the device's, else every "
        "tariff).")] = None,
    device: Annotated[str | None, typer.Option(
        "--device", help="Show the tariff assigned to this device (its `site` and `tz` tags "
        "are read from the registry when it is registered).")] = None,
    site: Annotated[str | None, typer.Option(
        "--site", help="The device's site tag, for the assignment.")] = None,
    tz: Annotated[str | None, typer.Option(
        "--tz", help="Local time zone of the schedule (default: the device's, else "
        "time.timezone).")] = None,
    week: Annotated[str | None, typer.Option(
        "--week", help="Any date of the week to show, YYYY-MM-DD (default: this week); the "
        "month picks the season.")] = None,
    tenant: TenantOption = None, data_dir: DataDirOption = None, config: ConfigOption = None,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Validate a tariffs file (errors name the tariff, the field and what to fix), then
    print a week's price schedule per kWh in local time: rows are the periods where the
    price stays the same, columns the days."""
    with friendly_errors():
        settings = settings_from(data_dir, config)
        path = file or tariffs_path(settings)
        if path is None:
            raise ConfigError("no tariffs file: name one, set energy.tariffs_file, or create "
                              f"{settings.path('tariffs.yaml')}")
        book = load_tariffs(path)
        tenant_id = tenant or settings.default_tenant
        tags = _tags_of(settings, tenant_id, device) if device else {}
        if site:
            tags[SITE_TAG] = site
        names = [tariff] if tariff else None
        if tariff and tariff not in book.tariffs:
            raise InputError(f"--tariff {tariff}: no such tariff in {path} (tariffs: "
                             f"{', '.join(sorted(book.tariffs))})")
        if names is None and (device or site or tenant):
            found = book.tariff_for(tenant_id, device or "", tags)
            if found is None:
                raise InputError(f"no tariff is assigned to device '{device or '-'}' (tenant "
                                 f"'{tenant_id}', site '{tags.get(SITE_TAG, '-')}'): add it "
                                 f"under `assign:` in {path}")
            names = [found]
        zone_name = tz or device_timezone(tags, tenant_id, settings.time.tenants,
                                          settings.time.timezone)
        if TZ_TAG in tags and not tz:
            zone_name = tags[TZ_TAG]
        zone(zone_name)
        try:
            day = date.fromisoformat(week) if week else datetime.now(zone(zone_name)).date()
        except ValueError:
            raise InputError(f"--week {week}: expected a date like 2026-03-23") from None
        monday = day - timedelta(days=day.weekday())
        if fmt is OutputFormat.table:
            console.print(f"[green]ok[/green] {path}: {len(book.tariffs)} tariff(s), "
                          f"{_assignments(book)} assignment(s)")
        for name in names or list(book.tariffs):
            spec = book.tariffs[name]
            columns, rows = week_schedule(book, name, monday)
            currency = book.currency_of(name)
            render(rows, columns, fmt, title=f"tariff '{name}': {currency}/kWh, week of "
                   f"{monday.isoformat()}, {zone_name} local time")
            if fmt is OutputFormat.table:
                if spec.demand:
                    every = format_duration(spec.demand.interval)
                    console.print(f"  demand charge: {spec.demand.price_per_kw:g} {currency} "
                                  f"per peak kW per month ({every} average)")
                factor = book.co2e_of(name, settings.energy.grid_co2e_kg_per_kwh)
                console.print(f"  grid factor: {factor:g} kg CO2e/kWh" if factor is not None
                              else "  grid factor: none (co2e stays empty)")


def _assignments(book: TariffBook) -> int:
    a = book.assign
    return len(a.tenants) + len(a.sites) + len(a.devices) + (1 if a.default else 0)
