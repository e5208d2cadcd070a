"""API tokens: `slk_` + 256 random bits, shown once, stored only as a SHA-256 hash.

A token acts with a role in one tenant, optionally bound to one device, for a user (a
session from `POST /api/v1/auth/login`, or an API token created for that user) and with
scopes that may be narrower than the role's. `verify()` is on the ingest hot path: it hashes,
then answers from a cache that lives `CACHE_SECONDS`; revocation clears the cache.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sensorlake.catalog import Catalog
from sensorlake.errors import AuthError, InputError, NotFound

TOKEN_PREFIX = "slk_"
SCOPES = ("read", "export", "write", "admin")
"""What a token may do (Cedar action groups of the same names)."""


class Role(StrEnum):
    OWNER = "owner"
    """Reads and writes everything in its tenant."""
    INGEST = "ingest"
    """Writes readings only; when bound to a device, only as that device."""
    GUEST = "guest"
    """Reads and exports the devices it was granted (`sensorlake grants add`)."""
    UTILITY = "utility"
    """Reads the energy devices it was granted, only inside its daily time window."""
    PUBLIC = "public"
    """Reads latest values and the map of devices marked public."""


ROLE_SCOPES: dict[Role, tuple[str, ...]] = {
    Role.OWNER: SCOPES,
    Role.INGEST: ("write",),
    Role.GUEST: ("read", "export"),
    Role.UTILITY: ("read",),
    Role.PUBLIC: ("read",),
}
"""The scopes a role may hold; a token gets them all unless it asks for fewer."""


class Action(StrEnum):
    WRITE = "write"
    READ = "read"


@dataclass(frozen=True)
class Principal:
    """Who a request acts as (never holds the token itself)."""

    token_id: str
    role: Role
    tenant: str
    device_id: str | None = None
    scopes: frozenset[str] = field(default_factory=lambda: frozenset(SCOPES))
    user_uid: str | None = None
    user_name: str | None = None
    window: tuple[int, int] = (0, 1440)
    """Daily window in minutes after midnight UTC (utility users)."""
    kind: str = "api"
    """api, session, or anonymous (a visitor of a server in public mode)."""
    rate_per_minute: int | None = None


@dataclass(frozen=True)
class TokenInfo:
    id: str
    role: Role
    tenant: str
    device_id: str | None
    label: str
    created_at: str
    expires_at: str | None
    revoked_at: str | None
    last_used_at: str | None
    kind: str = "api"
    scopes: tuple[str, ...] = SCOPES
    user_uid: str | None = None
    rate_per_minute: int | None = None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_scopes(role: Role, scopes: tuple[str, ...] | None) -> tuple[str, ...]:
    """The scopes of a new token: the role's, or the subset asked for."""
    allowed = ROLE_SCOPES[role]
    if scopes is None:
        return allowed
    wrong = [s for s in scopes if s not in allowed]
    if wrong or not scopes:
        raise InputError(f"scopes {', '.join(wrong) or '(none)'} are not available to a "
                         f"{role.value} token: choose from {', '.join(allowed)}")
    return tuple(s for s in SCOPES if s in scopes)


def authorize(principal: Principal, action: Action, tenant: str,
              device_id: str | None = None) -> None:
    """The ingest decision (hot path, no policy engine): raise AuthError(403) unless the
    principal may write as `device_id` in `tenant`. Mirrors the Cedar `ingest` policy."""
    if principal.tenant != tenant:
        raise AuthError("this token belongs to another tenant", status=403)
    if action is Action.READ and principal.role is not Role.OWNER:
        raise AuthError(f"an {principal.role.value} token cannot read; use an owner token",
                        status=403)
    if action is Action.WRITE and (principal.role not in (Role.OWNER, Role.INGEST)
                                   or "write" not in principal.scopes):
        raise AuthError(f"this {principal.role.value} token cannot send readings: use an "
                        "ingest or owner token with the write scope", status=403)
    if principal.device_id is not None and device_id is not None and (
            device_id != principal.device_id):
        raise AuthError(
            f"this token is bound to device '{principal.device_id}' and cannot act as "
            f"'{device_id}'", status=403)


_COLUMNS = ("id, role, tenant, device_id, label, created_at, expires_at, revoked_at,"
            " last_used_at, kind, scopes, user_uid, rate_per_minute")


class TokenStore:
    """Create, verify, list and revoke tokens. Verification is cached for a few seconds."""

    CACHE_SECONDS = 5.0
    CACHE_MAX = 10_000

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()

    def create(self, role: Role, tenant: str, device_id: str | None = None, label: str = "",
               expires_in: timedelta | None = None, scopes: tuple[str, ...] | None = None,
               user_uid: str | None = None, kind: str = "api",
               rate_per_minute: int | None = None) -> tuple[str, TokenInfo]:
        """A new token; the clear value is returned once and never stored."""
        granted = check_scopes(role, scopes)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token_id = secrets.token_hex(6)
        now = datetime.now(UTC)
        expires = (now + expires_in).isoformat() if expires_in else None
        self.catalog.write([(
            "INSERT INTO tokens (id, hash, role, tenant, device_id, label, created_at,"
            " expires_at, kind, scopes, user_uid, rate_per_minute)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (token_id, hash_token(token), role.value, tenant, device_id, label, now.isoformat(),
             expires, kind, ",".join(granted), user_uid, rate_per_minute),
        )], bump=False)
        return token, self.get(token_id)

    def get(self, token_id: str, tenant: str | None = None) -> TokenInfo:
        rows = self.catalog.execute(f"SELECT {_COLUMNS} FROM tokens WHERE id=?", (token_id,))
        if not rows or (tenant is not None and rows[0][2] != tenant):
            raise NotFound(f"no token with id '{token_id}' (see `sensorlake tokens list`)")
        return _info(rows[0])

    def list(self, tenant: str | None = None, kind: str | None = "api") -> list[TokenInfo]:
        where, params = [], []
        if tenant:
            where, params = ["tenant=?"], [tenant]
        if kind:
            where.append("kind=?")
            params.append(kind)
        sql = (f"SELECT {_COLUMNS} FROM tokens" + (" WHERE " + " AND ".join(where) if where
                                                    else "") + " ORDER BY created_at")
        return [_info(r) for r in self.catalog.execute(sql, tuple(params))]

    def revoke(self, token_id: str, tenant: str | None = None) -> TokenInfo:
        info = self.get(token_id, tenant)
        self.catalog.write([("UPDATE tokens SET revoked_at=? WHERE id=? AND revoked_at IS NULL",
                             (datetime.now(UTC).isoformat(), token_id))], bump=False)
        self.forget()
        return info

    def revoke_user(self, user_uid: str) -> None:
        """Revoke every token and session of a user (it was removed or disabled)."""
        self.catalog.write([("UPDATE tokens SET revoked_at=? WHERE user_uid=? AND"
                             " revoked_at IS NULL", (datetime.now(UTC).isoformat(), user_uid))],
                           bump=False)
        self.forget()

    def forget(self) -> None:
        """Drop the verification cache (after a revocation in this process)."""
        with self._lock:
            self._cache.clear()

    def verify(self, token: str) -> Principal:
        """The principal for a clear token, or AuthError(401) that never echoes the token.

        Answers from a per-process cache for CACHE_SECONDS (this runs on every ingest
        request); the cache lives in memory only and is bounded."""
        now = time.monotonic()
        hit = self._cache.get(token)
        if hit is None or now - hit[0] > self.CACHE_SECONDS:
            if not token.startswith(TOKEN_PREFIX):
                raise AuthError("malformed token: sensorlake tokens start with 'slk_'")
            hit = (now, self._lookup(hash_token(token)))
            with self._lock:
                if len(self._cache) >= self.CACHE_MAX:
                    self._cache.clear()
                self._cache[token] = hit
        if hit[1] is None:
            raise AuthError("unknown, expired or revoked token: create one with "
                            "`sensorlake tokens create`")
        return hit[1]

    def _lookup(self, digest: str) -> Principal | None:
        rows = self.catalog.execute(
            "SELECT t.id, t.role, t.tenant, t.device_id, t.expires_at, t.revoked_at, t.kind,"
            " t.scopes, t.rate_per_minute, u.uid, u.name, u.role, u.window_start, u.window_end,"
            " u.disabled_at FROM tokens t LEFT JOIN users u ON u.uid = t.user_uid"
            " WHERE t.hash=?", (digest,))
        if not rows:
            return None
        (token_id, role, tenant, device_id, expires_at, revoked_at, kind, scopes, rate,
         user_uid, user_name, user_role, start, end, disabled_at) = rows[0]
        now = datetime.now(UTC)
        if revoked_at or (expires_at and datetime.fromisoformat(expires_at) <= now):
            return None
        if user_uid is not None and disabled_at is not None:
            return None
        self.catalog.write([("UPDATE tokens SET last_used_at=? WHERE id=?",
                             (now.isoformat(), token_id))], bump=False)
        granted = frozenset(scopes.split(",")) if scopes is not None else frozenset(
            ROLE_SCOPES[Role(role)])
        return Principal(token_id, Role(user_role or role), tenant, device_id,
                         scopes=granted, user_uid=user_uid, user_name=user_name,
                         window=(start, end) if user_uid else (0, 1440), kind=kind,
                         rate_per_minute=rate)


def _info(r: tuple) -> TokenInfo:
    scopes = tuple(r[10].split(",")) if r[10] is not None else ROLE_SCOPES[Role(r[1])]
    return TokenInfo(r[0], Role(r[1]), r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], scopes,
                     r[11], r[12])
