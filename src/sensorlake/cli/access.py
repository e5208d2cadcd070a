"""`sensorlake users add|list|remove` and `sensorlake grants add|list|revoke`."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from sensorlake.auth.audit import AuditLog
from sensorlake.auth.grants import TEMPLATES, GrantStore
from sensorlake.auth.tenants import TenantStore
from sensorlake.auth.tokens import Role, TokenStore
from sensorlake.auth.users import UserStore, format_window, parse_window
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
from sensorlake.errors import InputError
from sensorlake.registry import DeviceRegistry
from sensorlake.runtime import open_catalog

users_app = typer.Typer(help="Users who log in to the dashboard and API.", no_args_is_help=True)
grants_app = typer.Typer(help="Share devices with guest and utility users (Cedar templates).",
                         no_args_is_help=True)


class _Stores:
    def __init__(self, data_dir: object, config: object) -> None:
        self.settings = settings_from(data_dir, config)  # type: ignore[arg-type]
        catalog = open_catalog(self.settings)
        self.tokens = TokenStore(catalog)
        self.users = UserStore(catalog, self.tokens)
        self.tenants = TenantStore(catalog)
        self.grants = GrantStore(catalog, self.users, DeviceRegistry(catalog), self.tenants)
        self.audit = AuditLog(catalog)

    def tenant(self, tenant: str | None) -> str:
        return tenant or self.settings.default_tenant


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="User name, unique in its tenant.")],
    role: Annotated[Role, typer.Option(help="owner, guest, utility or public.")],
    window: Annotated[str | None, typer.Option(
        help="Utility users: the daily window they may read in, UTC, e.g. 14:00-17:00.")] = None,
    password: Annotated[str | None, typer.Option(
        "--password", envvar="SENSORLAKE_PASSWORD", show_envvar=True,
        help="The password (at least 10 characters); asked for when not given.")] = None,
    tenant: TenantOption = None, data_dir: DataDirOption = None, config: ConfigOption = None,
) -> None:
    """Create a user with an Argon2id-hashed password."""
    with friendly_errors():
        stores = _Stores(data_dir, config)
        if role is not Role.UTILITY and window:
            raise InputError("--window applies to utility users only")
        span = parse_window(window) if window else ((840, 1020) if role is Role.UTILITY
                                                    else (0, 1440))
        secret = password or os.environ.get("SENSORLAKE_PASSWORD") or typer.prompt(
            f"password for {name}", hide_input=True, confirmation_prompt=True)
        user = stores.users.add(stores.tenant(tenant), name, secret, role, span)
        stores.audit.record(user.tenant, "cli", "user.add", name, role=role.value,
                            window=format_window(*span) if role is Role.UTILITY else None)
        console.print(f"user [bold]{name}[/bold] ({role.value}) added to tenant {user.tenant}")


@users_app.command("list")
def users_list(tenant: TenantOption = None, fmt: FormatOption = OutputFormat.table,
               data_dir: DataDirOption = None, config: ConfigOption = None) -> None:
    """List the users of a tenant (never their password hashes)."""
    with friendly_errors():
        stores = _Stores(data_dir, config)
        rows = [{"name": u.name, "role": u.role.value, "tenant": u.tenant,
                 "window": format_window(u.window_start, u.window_end)
                 if u.role is Role.UTILITY else "", "created_at": u.created_at}
                for u in stores.users.list(stores.tenant(tenant)) if u.disabled_at is None]
        render(rows, ["name", "role", "tenant", "window", "created_at"], fmt)


@users_app.command("remove")
def users_remove(name: str, tenant: TenantOption = None, data_dir: DataDirOption = None,
                 config: ConfigOption = None) -> None:
    """Disable a user: its sessions, tokens and grants end at once."""
    with friendly_errors():
        stores = _Stores(data_dir, config)
        user = stores.users.remove(stores.tenant(tenant), name)
        stores.audit.record(user.tenant, "cli", "user.remove", name)
        console.print(f"user {name} removed")


@grants_app.command("add")
def grants_add(
    template: Annotated[str, typer.Argument(help=f"One of {', '.join(TEMPLATES)}.")],
    user: Annotated[str, typer.Option(help="The guest or utility user.")],
    device: Annotated[str | None, typer.Option(
        help="The device shared; default: the whole tenant, devices added later included.")]
    = None,
    tenant: TenantOption = None, data_dir: DataDirOption = None, config: ConfigOption = None,
) -> None:
    """Link a template to a user and a device (or the tenant): one grant."""
    with friendly_errors():
        stores = _Stores(data_dir, config)
        grant = stores.grants.add(stores.tenant(tenant), template, user, device, "cli")
        stores.audit.record(grant.tenant, "cli", "grant.add", grant.id, template=template,
                            user=user, device=device)
        typer.echo(grant.id)
        err_console.print(f"{template} grant {grant.id}: {user} -> "
                          f"{device or 'every device of ' + grant.tenant}")


@grants_app.command("list")
def grants_list(tenant: TenantOption = None, fmt: FormatOption = OutputFormat.table,
                data_dir: DataDirOption = None, config: ConfigOption = None) -> None:
    """List the grants of a tenant."""
    with friendly_errors():
        stores = _Stores(data_dir, config)
        rows = [{"id": g.id, "template": g.template, "user": g.user,
                 "device": g.device_id or "(whole tenant)", "created_at": g.created_at,
                 "created_by": g.created_by} for g in stores.grants.list(stores.tenant(tenant))]
        render(rows, ["id", "template", "user", "device", "created_at", "created_by"], fmt)


@grants_app.command("revoke")
def grants_revoke(grant_id: Annotated[str, typer.Argument(help="From `grants list`.")],
                  tenant: TenantOption = None, data_dir: DataDirOption = None,
                  config: ConfigOption = None) -> None:
    """Revoke a grant (running servers apply it within a second)."""
    with friendly_errors():
        stores = _Stores(data_dir, config)
        grant = stores.grants.revoke(stores.tenant(tenant), grant_id)
        stores.audit.record(grant.tenant, "cli", "grant.revoke", grant_id,
                            template=grant.template, user=grant.user, device=grant.device_id)
        console.print(f"grant {grant_id} revoked")
