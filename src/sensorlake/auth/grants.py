"""Grants: links of the Cedar templates `guest` and `utility` to a user and a resource.

A grant names a user of the tenant and either one device or the whole tenant. It is stored
with the catalog uids (never the names), so removing a device or user ends its grants, and a
newcomer with the same name starts with none.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from sensorlake.auth.tenants import TenantStore
from sensorlake.auth.tokens import Role
from sensorlake.auth.users import UserStore
from sensorlake.catalog import Catalog
from sensorlake.errors import InputError, NotFound
from sensorlake.registry import DeviceRegistry

Template = Literal["guest", "utility"]
TEMPLATES: dict[str, Role] = {"guest": Role.GUEST, "utility": Role.UTILITY}
"""Each template applies to users of one role."""


@dataclass(frozen=True)
class Grant:
    id: str
    tenant: str
    template: str
    user: str
    user_uid: str
    device_id: str | None
    """None: the whole tenant (every device, now and later)."""
    resource_type: str
    resource_uid: str
    created_at: str
    created_by: str


class GrantStore:
    def __init__(self, catalog: Catalog, users: UserStore, registry: DeviceRegistry,
                 tenants: TenantStore) -> None:
        self.catalog = catalog
        self.users = users
        self.registry = registry
        self.tenants = tenants

    def add(self, tenant: str, template: str, user: str, device_id: str | None,
            created_by: str = "cli") -> Grant:
        if template not in TEMPLATES:
            raise InputError(f"unknown template '{template}': use one of "
                             f"{', '.join(TEMPLATES)}")
        account = self.users.get(tenant, user)
        if account.role is not TEMPLATES[template]:
            raise InputError(f"user '{user}' has role {account.role.value}; the {template} "
                             f"template applies to {TEMPLATES[template].value} users")
        if device_id is None:
            resource_type, resource_uid = "Tenant", self.tenants.uid(tenant)
        else:
            resource_type, resource_uid = "Device", self.registry.uid(tenant, device_id)
        grant_id = "g" + secrets.token_hex(8)
        self.catalog.write([(
            "INSERT INTO grants (id, tenant, template, user_uid, resource_type, resource_uid,"
            " created_at, created_by) VALUES (?,?,?,?,?,?,?,?)",
            (grant_id, tenant, template, account.uid, resource_type, resource_uid,
             datetime.now(UTC).isoformat(), created_by))])
        return self.get(tenant, grant_id)

    def get(self, tenant: str, grant_id: str) -> Grant:
        found = [g for g in self.list(tenant) if g.id == grant_id]
        if not found:
            raise NotFound(f"no grant '{grant_id}' in tenant '{tenant}' (see `sensorlake "
                           "grants list`)")
        return found[0]

    def list(self, tenant: str | None = None) -> list[Grant]:
        """Grants whose user and resource still exist (others are dead links)."""
        rows = self.catalog.execute(
            "SELECT g.id, g.tenant, g.template, u.name, g.user_uid, d.id, g.resource_type,"
            " g.resource_uid, g.created_at, g.created_by FROM grants g"
            " JOIN users u ON u.uid = g.user_uid AND u.disabled_at IS NULL"
            " LEFT JOIN devices d ON g.resource_type = 'Device' AND d.uid = g.resource_uid"
            " WHERE (g.resource_type = 'Tenant' OR d.uid IS NOT NULL)"
            + (" AND g.tenant = ?" if tenant else "") + " ORDER BY g.created_at, g.id",
            (tenant,) if tenant else ())
        return [Grant(*r) for r in rows]

    def revoke(self, tenant: str, grant_id: str) -> Grant:
        grant = self.get(tenant, grant_id)
        self.catalog.write([("DELETE FROM grants WHERE id=? AND tenant=?", (grant_id, tenant))])
        return grant
