"""`sensorlake query` and `sensorlake quarantine list`.

`query` answers from the stores directly, or, when `sensorlake up` is running on the same data
folder (it holds the DuckDB file), from that process's API with a short-lived token.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

import httpx
import pyarrow as pa
import typer

from sensorlake.api.routes.readings import build_query
from sensorlake.auth.tokens import Role, TokenStore
from sensorlake.cli.common import (
    ConfigOption,
    DataDirOption,
    FormatOption,
    OutputFormat,
    TenantOption,
    friendly_errors,
    render,
    settings_from,
)
from sensorlake.config import Settings
from sensorlake.errors import SensorlakeError
from sensorlake.runtime import open_catalog, server_url
from sensorlake.store.base import ReadingQuery
from sensorlake.store.duckdb import DuckDBStore
from sensorlake.store.lake import ParquetLake
from sensorlake.store.quarantine import SQLiteQuarantine

quarantine_app = typer.Typer(help="Inspect rejected input.", no_args_is_help=True)


def query(
    device: Annotated[str, typer.Option(help="Device id.")],
    metric: Annotated[list[str], typer.Option(help="Metric (repeatable), e.g. pm2_5.")],
    from_: Annotated[str, typer.Option("--from", help="ISO 8601, epoch ms or -24h.")] = "-1h",
    to: Annotated[str, typer.Option(help="ISO 8601, epoch ms or now.")] = "now",
    every: Annotated[str | None, typer.Option(help="Bucket width: 1m, 1h, 1d.")] = None,
    agg: Annotated[str, typer.Option(help="mean, min, max, sum, count, first, last.")] = "mean",
    limit: Annotated[int, typer.Option(help="Most rows returned.")] = 100_000,
    tenant: TenantOption = None, fmt: FormatOption = OutputFormat.table,
    data_dir: DataDirOption = None, config: ConfigOption = None,
) -> None:
    """Readings of one device over a time range, raw or bucketed."""
    with friendly_errors():
        settings = settings_from(data_dir, config)
        tenant = tenant or settings.default_tenant
        q = build_query(tenant, (device,), metric, from_, to, every, agg, limit)
        url = server_url(settings)
        if url:
            rows = _query_server(settings, url, tenant, device, metric, q.start.isoformat(),
                                 q.end.isoformat(), every, agg, limit)
        else:
            lake = ParquetLake(settings.path("lake"))
            store = DuckDBStore(settings.path("hot", "readings.duckdb"), lake,
                                settings.hot.retention_days, read_only=True)
            try:
                rows = _read_here(settings, store, q).to_pylist()
            finally:
                store.close()
        columns = ["ts", "metric", "value"] + (["count"] if every else [])
        extra = dict.fromkeys(k for row in rows for k in row)  # derived series' columns
        columns += [k for k in extra if k not in columns and k != "device_id"]
        render(rows, columns, fmt, title=f"{device} {', '.join(metric)}")


def _read_here(settings: Settings, store: DuckDBStore, query: ReadingQuery) -> pa.Table:
    """Stored and derived metrics from the store here, as the readings route serves them."""
    from types import SimpleNamespace

    from sensorlake.derived.serve import read_with_derived
    from sensorlake.registry import DeviceRegistry

    catalog = open_catalog(settings)
    try:
        here = SimpleNamespace(settings=settings, hot=store, registry=DeviceRegistry(catalog))
        return read_with_derived(here, query)
    finally:
        catalog.close()


def _query_server(settings: Settings, url: str, tenant: str, device: str, metrics: list[str],
                  start: str, end: str, every: str | None, agg: str,
                  limit: int) -> list[dict[str, Any]]:
    token, info = TokenStore(open_catalog(settings)).create(
        Role.OWNER, tenant, label="cli query", expires_in=timedelta(minutes=5))
    params: list[tuple[str, Any]] = [("metric", m) for m in metrics]
    params += [("from", start), ("to", end), ("agg", agg), ("limit", limit)]
    if every:
        params.append(("every", every))
    try:
        response = httpx.get(f"{url}/api/v1/devices/{device}/readings", params=params,
                             headers={"Authorization": f"Bearer {token}"}, timeout=60)
    except httpx.HTTPError as exc:
        raise SensorlakeError(f"the running sensorlake at {url} did not answer ({exc}); is it "
                              "still up?") from None
    finally:
        TokenStore(open_catalog(settings)).revoke(info.id)
    if response.status_code != 200:
        raise SensorlakeError(f"{url} answered {response.status_code}: "
                              f"{response.json().get('detail')}")
    rows = response.json()["results"]
    for row in rows:
        row.setdefault("metric", metrics[0])
    return rows


@quarantine_app.command("list")
def quarantine_list(
    limit: Annotated[int, typer.Option(help="Most rows shown, newest first.")] = 50,
    tenant: TenantOption = None, fmt: FormatOption = OutputFormat.table,
    data_dir: DataDirOption = None, config: ConfigOption = None,
) -> None:
    """Rejected messages and readings, newest first, with the reason and the raw bytes."""
    with friendly_errors():
        settings = settings_from(data_dir, config)
        store = SQLiteQuarantine(settings.path("quarantine.db"))
        try:
            table = store.list(tenant or settings.default_tenant, limit=limit)
        finally:
            store.close()
        rows = table.to_pylist()
        for row in rows:
            payload = row.get("payload")
            row["payload"] = payload.decode("utf-8", "replace")[:200] if payload else None
        columns = ["quarantined_at", "device_id", "stage", "field", "value", "reason",
                   "source", "payload"]
        if fmt is OutputFormat.table:
            columns = ["quarantined_at", "device_id", "stage", "reason"]
        render(rows, columns, fmt, title=f"{len(rows)} quarantined")
