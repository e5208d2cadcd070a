"""API tokens: `slk_` + 256 random bits, shown once, stored only as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sensorlake.catalog import Catalog
from sensorlake.errors import AuthError, NotFound

TOKEN_PREFIX = "slk_"


class Role(StrEnum):
    OWNER = "owner"
    """Reads and writes everything in its tenant."""
    INGEST = "ingest"
    """Writes readings only; when bound to a device, only as that device."""


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


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def authorize(principal: Principal, action: Action, tenant: str,
              device_id: str | None = None) -> None:
    """The one decision per request: raise AuthError(403) unless allowed."""
    if principal.tenant != tenant:
        raise AuthError("this token belongs to another tenant", status=403)
    if action is Action.READ and principal.role is not Role.OWNER:
        raise AuthError(f"an {principal.role.value} token cannot read; use an owner token",
                        status=403)
    if principal.device_id is not None and device_id is not None and (
            device_id != principal.device_id):
        raise AuthError(
            f"this token is bound to device '{principal.device_id}' and cannot act as "
            f"'{device_id}'", status=403)


class TokenStore:
    """Create, verify, list and revoke tokens. Verification is cached for a few seconds."""

    CACHE_SECONDS = 5.0
    CACHE_MAX = 10_000

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()
        self._last_used_flush: dict[str, str] = {}

    def create(self, role: Role, tenant: str, device_id: str | None = None, label: str = "",
               expires_in: timedelta | None = None) -> tuple[str, TokenInfo]:
        """A new token; the clear value is returned once and never stored."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token_id = secrets.token_hex(6)
        now = datetime.now(UTC)
        expires = (now + expires_in).isoformat() if expires_in else None
        self.catalog.write([(
            "INSERT INTO tokens (id, hash, role, tenant, device_id, label, created_at,"
            " expires_at) VALUES (?,?,?,?,?,?,?,?)",
            (token_id, hash_token(token), role.value, tenant, device_id, label, now.isoformat(),
             expires),
        )])
        return token, self.get(token_id)

    def get(self, token_id: str) -> TokenInfo:
        rows = self.catalog.execute(
            "SELECT id, role, tenant, device_id, label, created_at, expires_at, revoked_at,"
            " last_used_at FROM tokens WHERE id=?", (token_id,))
        if not rows:
            raise NotFound(f"no token with id '{token_id}' (see `sensorlake tokens list`)")
        r = rows[0]
        return TokenInfo(r[0], Role(r[1]), r[2], r[3], r[4], r[5], r[6], r[7], r[8])

    def list(self, tenant: str | None = None) -> list[TokenInfo]:
        sql = ("SELECT id FROM tokens" + (" WHERE tenant=?" if tenant else "")
               + " ORDER BY created_at")
        return [self.get(r[0]) for r in self.catalog.execute(sql, (tenant,) if tenant else ())]

    def revoke(self, token_id: str) -> None:
        self.get(token_id)
        self.catalog.write([("UPDATE tokens SET revoked_at=? WHERE id=? AND revoked_at IS NULL",
                             (datetime.now(UTC).isoformat(), token_id))])
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
            "SELECT id, role, tenant, device_id, expires_at, revoked_at FROM tokens WHERE hash=?",
            (digest,))
        if not rows:
            return None
        token_id, role, tenant, device_id, expires_at, revoked_at = rows[0]
        now = datetime.now(UTC)
        if revoked_at or (expires_at and datetime.fromisoformat(expires_at) <= now):
            return None
        self.catalog.write([("UPDATE tokens SET last_used_at=? WHERE id=?",
                             (now.isoformat(), token_id))], bump=False)
        return Principal(token_id, Role(role), tenant, device_id)
