"""Options and output shared by every command: --data-dir, --config, --format."""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from sensorlake.config import Settings, load_settings
from sensorlake.errors import SensorlakeError

console = Console()
err_console = Console(stderr=True)


class OutputFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


DataDirOption = Annotated[Path | None, typer.Option(
    "--data-dir", envvar="SENSORLAKE_DATA_DIR", show_envvar=True,
    help="Data folder (log, stores, lake, registry). Default ./sensorlake-data.")]
ConfigOption = Annotated[Path | None, typer.Option(
    "--config", envvar="SENSORLAKE_CONFIG", show_envvar=True,
    help="Settings file (default ./sensorlake.toml when present).")]
FormatOption = Annotated[OutputFormat, typer.Option(
    "--format", "-f", envvar="SENSORLAKE_FORMAT", show_envvar=True, help="Output format.")]
TenantOption = Annotated[str | None, typer.Option(
    "--tenant", envvar="SENSORLAKE_TENANT", show_envvar=True,
    help="Tenant (default: settings.default_tenant).")]


def settings_from(data_dir: Path | None, config: Path | None, **overrides: Any) -> Settings:
    return load_settings(config, data_dir=data_dir, **overrides)


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Print sensorlake errors as one line that says what to do, and exit 1."""
    try:
        yield
    except SensorlakeError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


def render(rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: OutputFormat,
           title: str | None = None) -> None:
    """Print rows as a rich table, CSV or JSON (one array)."""
    if fmt is OutputFormat.json:
        sys.stdout.write(orjson.dumps([{c: r.get(c) for c in columns} for r in rows],
                                      option=orjson.OPT_INDENT_2 | orjson.OPT_NAIVE_UTC
                                      ).decode() + "\n")
        return
    if fmt is OutputFormat.csv:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in columns])
        sys.stdout.write(buffer.getvalue())
        return
    table = Table(title=title, show_lines=False)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    console.print(table)
