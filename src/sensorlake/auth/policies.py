"""Authorization with Cedar: the one decision per request, and the device set of list routes.

    Authorizer(catalog, tenants)
      .decide(principal, action, resource)   one Cedar decision (default deny)
      .scope(principal, action)              the devices a list or range route may return

The policy text and schema (`auth/cedar/`) are parsed once. Grants are links of the `guest`
and `utility` templates; the linked policy set is rebuilt only when the catalog changes.
Entity ids are catalog uids (random, never reused).

List and range routes never ask Cedar once per row: after one tenant-level decision,
`scope()` turns the same facts Cedar uses (role, grants, device type and public flag, the
time window, token scopes, a bound device) into a device filter for SQL. The tests check,
over every role and device, that the filter equals Cedar's per-device answer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import cedarpy

from sensorlake.auth.tenants import TenantStore
from sensorlake.auth.tokens import Principal, Role
from sensorlake.catalog import Catalog
from sensorlake.errors import ConfigError

ACTION_SCOPE = {
    "read_device": "read", "read_latest": "read", "read_map": "read", "read_readings": "read",
    "list_devices": "read", "read_quarantine": "read", "read_status": "read",
    "export_readings": "export", "ingest": "write", "create_device": "admin",
    "manage_tokens": "admin", "manage_grants": "admin", "read_audit": "admin",
    "update_device": "admin", "delete_device": "admin", "run_jobs": "admin",
}
"""Every action in the schema and the token scope (action group) it belongs to."""

GUEST_ACTIONS = frozenset({"read_device", "read_latest", "read_map", "read_readings",
                           "export_readings"})
UTILITY_ACTIONS = frozenset({"read_device", "read_latest", "read_map", "read_readings"})
PUBLIC_ACTIONS = frozenset({"read_latest", "read_map"})
ENERGY_TYPE_GLOB = "energy*"
"""Devices whose type matches this are what a utility may read (Cedar: `like "energy*"`)."""


def policy_text() -> str:
    return resources.files("sensorlake.auth").joinpath("cedar/policies.cedar").read_text()


def schema_text() -> str:
    return resources.files("sensorlake.auth").joinpath("cedar/schema.cedarschema").read_text()


@dataclass(frozen=True)
class DeviceResource:
    tenant: str
    device_id: str
    uid: str
    type: str
    public: bool


@dataclass(frozen=True)
class TenantResource:
    tenant: str


Resource = DeviceResource | TenantResource


@dataclass(frozen=True)
class DeviceScope:
    """The devices of `tenant` a request may see: `device_ids=None` means all of them."""

    tenant: str
    device_ids: tuple[str, ...] | None

    def allows(self, device_id: str) -> bool:
        return self.device_ids is None or device_id in self.device_ids

    def restrict(self, wanted: tuple[str, ...] | None) -> tuple[str, ...] | None:
        """`wanted` (None = all) cut down to the scope; () matches nothing."""
        if wanted is None:
            return self.device_ids
        return tuple(d for d in wanted if self.allows(d))


def minute_of_day(at: datetime) -> int:
    at = at.astimezone(UTC)
    return at.hour * 60 + at.minute


def in_window(window: tuple[int, int], minute: int) -> bool:
    start, end = window
    return start <= minute < end if start <= end else (minute >= start or minute < end)


class Authorizer:
    """Cedar decisions over the catalog's tenants, users, devices and grants."""

    REFRESH_SECONDS = 1.0

    def __init__(self, catalog: Catalog, tenants: TenantStore,
                 policies_file: Path | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.catalog = catalog
        self.tenants = tenants
        self.clock = clock or (lambda: datetime.now(UTC))
        text = policies_file.read_text() if policies_file else policy_text()
        try:
            self._base = cedarpy.PolicySet.from_str(text)
            self.schema = cedarpy.Schema.from_str(schema_text())
        except ValueError as exc:
            raise ConfigError(f"cannot parse the Cedar policies "
                              f"{policies_file or '(built-in)'}: {exc}") from exc
        self._lock = threading.Lock()
        self._linked = self._base
        self._version = -1
        self._checked = 0.0

    # -- the policy set ---------------------------------------------------------------------
    def policy_set(self) -> cedarpy.PolicySet:
        """The base policies plus one link per grant; rebuilt when the catalog changed."""
        with self._lock:
            now = time.monotonic()
            if now - self._checked < self.REFRESH_SECONDS and self._version >= 0:
                return self._linked
            self._checked = now
            version = self.catalog.change_number()
            if version != self._version:
                rows = self.catalog.execute(
                    "SELECT id, template, user_uid, resource_type, resource_uid FROM grants"
                    " ORDER BY id")
                links = [{"template_id": template, "new_id": grant_id, "values": {
                    "?principal": {"type": "User", "id": user_uid},
                    "?resource": {"type": rtype, "id": ruid}}}
                    for grant_id, template, user_uid, rtype, ruid in rows]
                self._linked = self._base.with_linked_batch(links) if links else self._base
                self._version = version
            return self._linked

    def refresh(self) -> None:
        """Look at the catalog on the next decision (after a grant in this process)."""
        with self._lock:
            self._checked = 0.0

    # -- one decision -----------------------------------------------------------------------
    def device(self, tenant: str, device_id: str) -> DeviceResource | None:
        rows = self.catalog.execute("SELECT uid, type, public FROM devices WHERE tenant=? AND"
                                    " id=?", (tenant, device_id))
        if not rows:
            return None
        return DeviceResource(tenant, device_id, rows[0][0], rows[0][1], bool(rows[0][2]))

    def decide(self, principal: Principal, action: str, resource: Resource) -> bool:
        if action not in ACTION_SCOPE:
            raise ValueError(f"unknown action {action!r}: use one of {', '.join(ACTION_SCOPE)}")
        entities, principal_uid = self._entities(principal, resource)
        if isinstance(resource, DeviceResource):
            resource_uid = {"type": "Device", "id": resource.uid}
        else:
            resource_uid = {"type": "Tenant", "id": self.tenants.uid(resource.tenant)}
        request = {"principal": principal_uid, "action": {"type": "Action", "id": action},
                   "resource": resource_uid,
                   "context": {"scopes": sorted(principal.scopes),
                               "minute_of_day": minute_of_day(self.clock())}}
        result = cedarpy.is_authorized(request, self.policy_set(), entities, self.schema)
        return result.allowed

    def _entities(self, principal: Principal,
                  resource: Resource) -> tuple[list[dict[str, Any]], dict[str, str]]:
        tenant_uid = self.tenants.uid(principal.tenant)
        tenant_ref = {"type": "Tenant", "id": tenant_uid}
        entities: list[dict[str, Any]] = [{"uid": tenant_ref, "attrs": {}, "parents": []}]
        if isinstance(resource, DeviceResource) or resource.tenant != principal.tenant:
            other = self.tenants.uid(resource.tenant)
            if other != tenant_uid:
                entities.append({"uid": {"type": "Tenant", "id": other}, "attrs": {},
                                 "parents": []})
        if principal.kind == "anonymous":
            uid = {"type": "Anonymous", "id": "anonymous-" + tenant_uid}
            entities.append({"uid": uid, "attrs": {"tenant": {"__entity": tenant_ref}},
                             "parents": []})
        else:
            uid = {"type": "User", "id": principal.user_uid or "token-" + principal.token_id}
            attrs: dict[str, Any] = {"tenant": {"__entity": tenant_ref},
                                     "role": principal.role.value,
                                     "window_start": principal.window[0],
                                     "window_end": principal.window[1]}
            if principal.device_id is not None:
                bound = self.device(principal.tenant, principal.device_id)
                attrs["device"] = {"__entity": {
                    "type": "Device", "id": bound.uid if bound else "unregistered"}}
            entities.append({"uid": uid, "attrs": attrs, "parents": [tenant_ref]})
        if isinstance(resource, DeviceResource):
            owner = {"type": "Tenant", "id": self.tenants.uid(resource.tenant)}
            entities.append({"uid": {"type": "Device", "id": resource.uid},
                             "attrs": {"tenant": {"__entity": owner}, "type": resource.type,
                                       "public": resource.public}, "parents": [owner]})
        return entities, uid

    # -- the device set of list routes ------------------------------------------------------
    def scope(self, principal: Principal, action: str) -> DeviceScope:
        """What Cedar would allow device by device, as one filter (see the module doc)."""
        tenant = principal.tenant
        nothing = DeviceScope(tenant, ())
        if action == "list_devices":  # a tenant-level action: its rows are the readable devices
            action = "read_device"
        if ACTION_SCOPE[action] not in principal.scopes:
            return nothing
        role, minute = principal.role, minute_of_day(self.clock())
        if principal.kind == "anonymous" or role is Role.PUBLIC:
            ids = ()
        elif role is Role.OWNER:
            ids = None
        elif role is Role.INGEST:
            ids = None if action == "ingest" else ()
        elif role is Role.GUEST and principal.user_uid:
            ids = self._granted(principal, "guest", "") if action in GUEST_ACTIONS else ()
        elif role is Role.UTILITY and principal.user_uid and in_window(principal.window, minute):
            ids = self._granted(principal, "utility", " AND type GLOB ?") \
                if action in UTILITY_ACTIONS else ()
        else:
            ids = ()
        if action in PUBLIC_ACTIONS and ids is not None:  # policy public-devices
            public = self._ids("tenant=? AND public=1", (tenant,))
            ids = tuple(sorted({*ids, *public}))
        if principal.device_id is not None:
            ids = DeviceScope(tenant, ids).restrict((principal.device_id,))
        return DeviceScope(tenant, ids)

    def _granted(self, principal: Principal, template: str,
                 type_filter: str) -> tuple[str, ...] | None:
        rows = self.catalog.execute(
            "SELECT resource_type, resource_uid FROM grants WHERE tenant=? AND user_uid=? AND"
            " template=?", (principal.tenant, principal.user_uid, template))
        extra: tuple[str, ...] = (ENERGY_TYPE_GLOB,) if type_filter else ()
        if any(rtype == "Tenant" and ruid == self.tenants.uid(principal.tenant)
               for rtype, ruid in rows):
            if not type_filter:
                return None
            return self._ids("tenant=?" + type_filter, (principal.tenant, *extra))
        uids = [ruid for rtype, ruid in rows if rtype == "Device"]
        if not uids:
            return ()
        marks = ",".join("?" for _ in uids)
        return self._ids(f"tenant=? AND uid IN ({marks})" + type_filter,
                         (principal.tenant, *uids, *extra))

    def _ids(self, where: str, params: tuple) -> tuple[str, ...]:
        rows = self.catalog.execute(f"SELECT id FROM devices WHERE {where} ORDER BY id", params)
        return tuple(r[0] for r in rows)
