"""Cedar policies: valid against the schema, default deny, templates linked per grant, and the
device filter of list routes equal to Cedar's per-device answer for every role."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import cedarpy
import pytest
from argon2 import PasswordHasher

from sensorlake.auth.grants import GrantStore
from sensorlake.auth.policies import (
    ACTION_SCOPE,
    Authorizer,
    TenantResource,
    in_window,
    policy_text,
    schema_text,
)
from sensorlake.auth.tenants import TenantStore
from sensorlake.auth.tokens import ROLE_SCOPES, Principal, Role, TokenStore
from sensorlake.auth.users import UserStore
from sensorlake.catalog import Catalog
from sensorlake.registry import Device, DeviceRegistry

FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
DEVICE_ACTIONS = [a for a in ACTION_SCOPE if a not in (
    "list_devices", "read_quarantine", "read_status", "create_device", "manage_tokens",
    "manage_grants", "read_audit", "run_jobs")]


class Setup:
    def __init__(self, path: Path) -> None:
        self.catalog = Catalog(path / "catalog.db")
        self.registry = DeviceRegistry(self.catalog)
        self.tokens = TokenStore(self.catalog)
        self.tenants = TenantStore(self.catalog)
        self.users = UserStore(self.catalog, self.tokens, FAST)
        self.grants = GrantStore(self.catalog, self.users, self.registry, self.tenants)
        self.now = datetime(2026, 11, 23, 15, 30, tzinfo=UTC)
        self.authz = Authorizer(self.catalog, self.tenants, clock=lambda: self.now)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    built = Setup(tmp_path)
    yield built
    built.catalog.close()


def test_policies_validate_against_the_schema() -> None:
    result = cedarpy.validate_policies(policy_text(), schema_text())
    assert result.validation_passed, result.errors
    templates = {t["id_annotation"] for t in cedarpy.PolicySet.from_str(policy_text()).templates()}
    assert templates == {"guest", "utility"}


def test_schema_actions_are_the_ones_the_code_knows() -> None:
    for action in ACTION_SCOPE:
        assert f'"{action}"' in schema_text(), action


def test_default_deny(setup: Setup) -> None:
    """A principal with a role no policy knows gets nothing, on any action."""
    setup.registry.add(Device(id="d1", tenant="t"))
    stranger = Principal("tok", Role.OWNER, "t")
    device = setup.authz.device("t", "d1")
    assert device is not None
    assert setup.authz.decide(stranger, "read_readings", device)
    nobody = Principal("tok", Role.OWNER, "t", scopes=frozenset())
    for action in DEVICE_ACTIONS:
        assert not setup.authz.decide(nobody, action, device), action


def _world(setup: Setup) -> dict[str, Principal]:
    reg = setup.registry
    reg.upsert([Device(id="aq-1", tenant="t", type="air_quality", public=True),
                Device(id="aq-2", tenant="t", type="air_quality"),
                Device(id="en-1", tenant="t", type="energy_meter"),
                Device(id="en-2", tenant="t", type="energy_meter", public=True),
                Device(id="x-1", tenant="other", type="energy_meter", public=True)])
    users = setup.users
    guest = users.add("t", "gina", "password-123", Role.GUEST)
    guest_all = users.add("t", "gail", "password-123", Role.GUEST)
    util = users.add("t", "ute", "password-123", Role.UTILITY, (840, 1020))
    util_night = users.add("t", "nils", "password-123", Role.UTILITY, (1320, 120))
    util_few = users.add("t", "ulf", "password-123", Role.UTILITY, (0, 1440))
    setup.grants.add("t", "guest", "gina", "aq-2")
    setup.grants.add("t", "guest", "gina", "en-1")
    setup.grants.add("t", "guest", "gail", None)
    setup.grants.add("t", "utility", "ute", None)
    setup.grants.add("t", "utility", "nils", None)
    setup.grants.add("t", "utility", "ulf", "en-1")
    setup.grants.add("t", "utility", "ulf", "aq-2")  # not energy: never readable

    def user(u: object) -> Principal:
        return Principal("tok", u.role, "t", user_uid=u.uid, user_name=u.name,  # type: ignore[attr-defined]
                         window=(u.window_start, u.window_end),  # type: ignore[attr-defined]
                         scopes=frozenset(ROLE_SCOPES[u.role]))  # type: ignore[attr-defined]

    return {
        "owner": Principal("t1", Role.OWNER, "t"),
        "owner-bound": Principal("t2", Role.OWNER, "t", device_id="aq-2"),
        "owner-read-only": Principal("t3", Role.OWNER, "t", scopes=frozenset({"read"})),
        "ingest": Principal("t4", Role.INGEST, "t", scopes=frozenset({"write"})),
        "ingest-bound": Principal("t5", Role.INGEST, "t", device_id="en-1",
                                  scopes=frozenset({"write"})),
        "public": Principal("t6", Role.PUBLIC, "t", scopes=frozenset({"read"})),
        "anonymous": Principal("anonymous", Role.PUBLIC, "t", scopes=frozenset({"read"}),
                               kind="anonymous"),
        "guest": user(guest), "guest-tenant": user(guest_all), "utility": user(util),
        "utility-night": user(util_night), "utility-devices": user(util_few),
        "other-owner": Principal("t7", Role.OWNER, "other"),
    }


@pytest.mark.parametrize("minute", [10 * 60, 15 * 60 + 30, 23 * 60])
def test_scope_equals_cedar_device_by_device(setup: Setup, minute: int) -> None:
    """For every principal, action and device of the tenant: the SQL filter of list routes
    contains the device exactly when Cedar allows the action on it."""
    principals = _world(setup)
    setup.now = datetime(2026, 11, 23, minute // 60, minute % 60, tzinfo=UTC)
    setup.authz.refresh()
    devices = ["aq-1", "aq-2", "en-1", "en-2"]
    mismatches = []
    for (name, principal), action in itertools.product(principals.items(), DEVICE_ACTIONS):
        if principal.tenant != "t":
            continue
        scope = setup.authz.scope(principal, action)
        for device_id in devices:
            resource = setup.authz.device("t", device_id)
            assert resource is not None
            cedar = setup.authz.decide(principal, action, resource)
            if cedar != scope.allows(device_id):
                mismatches.append(f"{name} {action} {device_id}: cedar {cedar}, "
                                  f"scope {scope.device_ids}")
    assert not mismatches, "\n".join(mismatches)


def test_what_each_role_may_read(setup: Setup) -> None:
    p = _world(setup)
    setup.now = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
    scope = setup.authz.scope
    assert scope(p["owner"], "read_readings").device_ids is None
    assert scope(p["owner-bound"], "read_readings").device_ids == ("aq-2",)
    assert scope(p["guest"], "read_readings").device_ids == ("aq-2", "en-1")
    assert scope(p["guest"], "read_latest").device_ids == ("aq-1", "aq-2", "en-1", "en-2")
    assert scope(p["guest-tenant"], "export_readings").device_ids is None
    assert scope(p["utility"], "read_readings").device_ids == ("en-1", "en-2")
    assert scope(p["utility"], "export_readings").device_ids == ()
    assert scope(p["utility-devices"], "read_readings").device_ids == ("en-1",)
    assert scope(p["public"], "read_latest").device_ids == ("aq-1", "en-2")
    assert scope(p["public"], "read_readings").device_ids == ()
    assert scope(p["anonymous"], "read_map").device_ids == ("aq-1", "en-2")
    setup.now = datetime(2026, 11, 23, 18, 0, tzinfo=UTC)
    assert scope(p["utility"], "read_readings").device_ids == ()
    tenant = TenantResource("t")
    assert not setup.authz.decide(p["utility"], "read_latest", tenant)
    assert setup.authz.decide(p["guest"], "read_latest", tenant)
    assert not setup.authz.decide(p["other-owner"], "read_latest", tenant)


def test_windows_cross_midnight() -> None:
    assert in_window((840, 1020), 900) and not in_window((840, 1020), 1020)
    assert in_window((1320, 120), 1400) and in_window((1320, 120), 60)
    assert not in_window((1320, 120), 600)


def test_entity_ids_are_never_reused(setup: Setup) -> None:
    """A device removed and added again is a new entity: the old grant does not reach it."""
    _world(setup)
    principal = next(p for n, p in _world_principals(setup) if n == "gina")
    first = setup.authz.device("t", "aq-2")
    assert first is not None and setup.authz.decide(principal, "read_readings", first)
    setup.registry.remove("t", "aq-2")
    setup.registry.add(Device(id="aq-2", tenant="t"))
    setup.authz.refresh()
    second = setup.authz.device("t", "aq-2")
    assert second is not None and second.uid != first.uid
    assert not setup.authz.decide(principal, "read_readings", second)
    assert "aq-2" not in (setup.authz.scope(principal, "read_readings").device_ids or ())
    assert all(g.device_id != "aq-2" for g in setup.grants.list("t"))


def _world_principals(setup: Setup) -> list[tuple[str, Principal]]:
    return [(u.name, Principal("tok", u.role, "t", user_uid=u.uid, user_name=u.name,
                               window=(u.window_start, u.window_end),
                               scopes=frozenset(ROLE_SCOPES[u.role])))
            for u in setup.users.list("t")]


def test_policies_are_parsed_once_and_relinked_on_change(setup: Setup,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = cedarpy.PolicySet.from_str
    monkeypatch.setattr(cedarpy.PolicySet, "from_str",
                        staticmethod(lambda text: calls.append(1) or original(text)))
    _world(setup)
    base = setup.authz.policy_set()
    assert setup.authz.policy_set() is base  # nothing changed: the same handle
    setup.grants.add("t", "guest", "gail", "aq-1")
    setup.authz.refresh()
    assert setup.authz.policy_set() is not base
    assert calls == []  # links, never a re-parse


def test_production_passwords_use_argon2id(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "catalog.db")
    users = UserStore(catalog, TokenStore(catalog))
    users.add("t", "alice", "a long enough password", Role.OWNER)
    stored = catalog.execute("SELECT password_hash FROM users")[0][0]
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$"), stored
    catalog.close()
