"""`sensorlake tokens create|list|revoke`."""

from __future__ import annotations

from typing import Annotated

import typer

from sensorlake.auth.audit import AuditLog
from sensorlake.auth.tokens import Role, TokenStore
from sensorlake.cli.common import (
    ConfigOption,
    DataDirOption,
    FormatOption,
    OutputFormat,
    TenantOption,
    err_console,
    friendly_errors,
    render,
    settings_from,
)
from sensorlake.ingest.broker_auth import BrokerCredentials
from sensorlake.runtime import open_catalog
from sensorlake.timeparse import parse_duration

app = typer.Typer(help="API tokens (stored only as hashes).", no_args_is_help=True)


@app.command("create")
def create(
    role: Annotated[Role, typer.Option(help="owner: read and write the tenant; ingest: write "
                                       "readings only; guest, utility, public: see below.")],
    device: Annotated[str | None, typer.Option(
        "--device", help="Bind the token to one device (it can only send as that device).")]
    = None,
    label: Annotated[str, typer.Option(help="What the token is for.")] = "",
    expires_in: Annotated[str | None, typer.Option(help="e.g. 30d; default never.")] = None,
    scope: Annotated[list[str] | None, typer.Option(
        "--scope", help="Narrow the token to these scopes (repeatable): read, export, write, "
        "admin; default: all of its role's.")] = None,
    rate_per_minute: Annotated[int | None, typer.Option(
        help="Requests per minute for this token (default auth.rate_per_minute).")] = None,
    tenant: TenantOption = None, data_dir: DataDirOption = None, config: ConfigOption = None,
) -> None:
    """Create a token and print it alone on stdout (it is shown only this once).

    Roles: owner (everything in the tenant), ingest (send readings), guest and utility
    (what their grants allow; see `sensorlake grants`), public (latest values and map of
    public devices)."""
    with friendly_errors():
        settings = settings_from(data_dir, config)
        catalog = open_catalog(settings)
        store = TokenStore(catalog)
        token, info = store.create(role, tenant or settings.default_tenant, device, label,
                                   parse_duration(expires_in) if expires_in else None,
                                   tuple(scope) if scope else None,
                                   rate_per_minute=rate_per_minute)
        AuditLog(catalog).record(info.tenant, "cli", "token.create", info.id,
                                 role=info.role.value, device=info.device_id,
                                 scopes=list(info.scopes))
        BrokerCredentials(catalog).remember(info, token)  # device tokens: MQTT password too
        typer.echo(token)
        err_console.print(f"token {info.id} ({info.role.value}, tenant {info.tenant}"
                          f"{', device ' + info.device_id if info.device_id else ''}) created;"
                          " store it now: it cannot be shown again")


@app.command("list")
def list_(tenant: TenantOption = None, all_tenants: Annotated[bool, typer.Option(
    "--all-tenants", help="List every tenant's tokens.")] = False,
          fmt: FormatOption = OutputFormat.table, data_dir: DataDirOption = None,
          config: ConfigOption = None) -> None:
    """List tokens (never their values)."""
    with friendly_errors():
        settings = settings_from(data_dir, config)
        infos = TokenStore(open_catalog(settings)).list(
            None if all_tenants else tenant or settings.default_tenant)
        rows = [{**info.__dict__, "role": info.role.value, "scopes": ",".join(info.scopes)}
                for info in infos]
        render(rows, ["id", "role", "tenant", "device_id", "scopes", "label", "created_at",
                      "expires_at", "revoked_at", "last_used_at"], fmt)


@app.command("revoke")
def revoke(token_id: Annotated[str, typer.Argument(help="The token id from `tokens list`.")],
           data_dir: DataDirOption = None, config: ConfigOption = None) -> None:
    """Revoke a token (takes effect within 5 seconds in running processes)."""
    with friendly_errors():
        settings = settings_from(data_dir, config)
        catalog = open_catalog(settings)
        info = TokenStore(catalog).revoke(token_id)
        AuditLog(catalog).record(info.tenant, "cli", "token.revoke", token_id)
        err_console.print(f"token {token_id} revoked")
