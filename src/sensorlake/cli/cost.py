"""`sensorlake cost`: what a fleet costs on AWS serverless versus one sensorlake machine."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.table import Table

from sensorlake.cli.common import FormatOption, OutputFormat, console, friendly_errors, render
from sensorlake.errors import InputError
from sensorlake.ops.cost import Workload, estimate, load_prices
from sensorlake.timeparse import parse_duration

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB)?$", re.I)
_FACTORS = {"b": 1, "kb": 1000, "kib": 1024, "mb": 1_000_000, "mib": 1 << 20}


def parse_size(text: str) -> int:
    """`200B`, `1.5KB`, `2KiB`, `200` (bytes)."""
    match = _SIZE.match(text.strip())
    if not match:
        raise InputError(f"'{text}' is not a size: use a number and B, KB, KiB, MB or MiB "
                         "(e.g. 200B)")
    return max(1, round(float(match.group(1)) * _FACTORS[(match.group(2) or "b").lower()]))


def cost(
    devices: Annotated[int, typer.Option(help="Number of devices.", min=1)],
    interval: Annotated[str, typer.Option(help="Time between two messages of a device, "
                                          "e.g. 5s, 10s, 1m.")] = "10s",
    payload: Annotated[str, typer.Option(help="Size of one message, e.g. 200B, 1KB.")] = "200B",
    readings: Annotated[int, typer.Option(help="Readings (metrics) per message.",
                                          min=1)] = 5,
    retention_hot: Annotated[str, typer.Option(
        "--retention-hot", help="How long readings stay in the hot store, e.g. 30d.")] = "30d",
    lorawan: Annotated[bool, typer.Option(
        "--lorawan", help="Devices reach AWS through IoT Core for LoRaWAN.")] = False,
    years: Annotated[int, typer.Option(help="Storage growth horizon in years.",
                                       min=1, max=20)] = 3,
    prices: Annotated[Path | None, typer.Option(
        help="Price file (TOML) instead of the bundled one.", envvar="SENSORLAKE_COST_PRICES",
        show_envvar=True)] = None,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Monthly cost of the AWS serverless equivalent next to a self-hosted sensorlake."""
    with friendly_errors():
        work = Workload(devices=devices, interval_s=parse_duration(interval).total_seconds(),
                        payload_bytes=parse_size(payload), readings_per_message=readings,
                        retention_hot_days=parse_duration(retention_hot).total_seconds() / 86400,
                        lorawan=lorawan, years=years)
        result = estimate(work, load_prices(prices))
    if fmt is OutputFormat.json:
        sys.stdout.write(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2).decode()
                         + "\n")
        return
    rows = [{"side": line.side, "item": line.item, "quantity": round(line.quantity, 2),
             "unit": line.unit, "usd_per_month": round(line.monthly, 2), "note": line.note}
            for line in result.lines]
    if fmt is OutputFormat.csv:
        render(rows, ["side", "item", "quantity", "unit", "usd_per_month", "note"], fmt)
        return
    console.print(f"[bold]{devices:,} devices[/bold], one {result.workload.payload_bytes} B "
                  f"message every {interval}: [bold]{result.messages_per_device_month:,.0f}"
                  f"[/bold] messages per device per month, {result.messages_month:,.0f} in "
                  f"all ({result.readings_month:,.0f} readings). Prices as of "
                  f"{result.prices_as_of}.", highlight=False)
    table = Table(title="Monthly cost (USD)")
    for column in ("side", "item", "quantity", "unit", "USD / month"):
        table.add_column(column, justify="right" if column in ("quantity", "USD / month")
                         else "left")
    for row in rows:
        table.add_row(row["side"], row["item"], f"{row['quantity']:,.0f}", row["unit"],
                      f"{row['usd_per_month']:,.2f}")
    table.add_row("aws", "[bold]total[/bold]", "", "", f"[bold]{result.total('aws'):,.2f}[/bold]")
    table.add_row("sensorlake", "[bold]total[/bold]", "", "",
                  f"[bold]{result.total('sensorlake'):,.2f}[/bold]")
    console.print(table)
    growth = Table(title=f"Storage growth and yearly cost over {years} year(s)")
    for column in ("year", "sensorlake GB", "AWS S3 GB", "AWS USD / year",
                   "sensorlake USD / year"):
        growth.add_column(column, justify="right")
    for g in result.growth:
        growth.add_row(str(g["year"]), f"{g['sensorlake_gb']:,.1f}", f"{g['aws_s3_gb']:,.1f}",
                       f"{g['aws_total_year']:,.2f}", f"{g['sensorlake_total_year']:,.2f}")
    console.print(growth)
    console.print("[dim]AWS list prices, no free tier; assumptions (Lambda batch, Athena "
                  "queries, compression) are in the price file. Edit it or pass --prices.[/dim]")
