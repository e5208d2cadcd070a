"""Users: a name and an Argon2id password in one tenant, with a role; login opens a session.

A session is a token of kind `session` (the same `slk_` format, hashed the same way) that
expires after `auth.session_hours`. Wrong name and wrong password take the same time and
give the same answer.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from sensorlake.auth.tokens import Role, TokenInfo, TokenStore
from sensorlake.catalog import Catalog
from sensorlake.errors import AuthError, InputError, NotFound

USER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$"
_NAME = re.compile(USER_NAME_PATTERN)
MIN_PASSWORD = 10

DEFAULT_HASHER = PasswordHasher()
"""Argon2id with argon2-cffi's defaults (RFC 9106 low-memory profile: 64 MiB, t=3, p=4)."""


@dataclass(frozen=True)
class User:
    uid: str
    tenant: str
    name: str
    role: Role
    window_start: int
    window_end: int
    created_at: str
    disabled_at: str | None


def parse_window(text: str) -> tuple[int, int]:
    """`14:00-17:00` (UTC) -> minutes after midnight (840, 1020); the end may be past
    midnight (`22:00-02:00`)."""
    match = re.fullmatch(r"(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})", text.strip())
    if not match:
        raise InputError(f"window '{text}' must look like 14:00-17:00 (UTC)")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 24 or h2 > 24 or m1 > 59 or m2 > 59:
        raise InputError(f"window '{text}': hours are 0-24 and minutes 0-59")
    start, end = min(h1 * 60 + m1, 1440), min(h2 * 60 + m2, 1440)
    if start == end:
        raise InputError(f"window '{text}' is empty")
    return start, end


def format_window(start: int, end: int) -> str:
    return f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"


class UserStore:
    """Create, list, disable users; check passwords; open and close sessions."""

    def __init__(self, catalog: Catalog, tokens: TokenStore,
                 hasher: PasswordHasher = DEFAULT_HASHER) -> None:
        self.catalog = catalog
        self.tokens = tokens
        self.hasher = hasher
        self._dummy: str | None = None

    def _dummy_hash(self) -> str:
        """A hash to verify against when the user does not exist (same time either way)."""
        if self._dummy is None:
            self._dummy = self.hasher.hash(secrets.token_hex(16))
        return self._dummy

    def add(self, tenant: str, name: str, password: str, role: Role,
            window: tuple[int, int] = (0, 1440)) -> User:
        if not _NAME.match(name):
            raise InputError(f"user name '{name}' must be 1-128 letters, digits or ._@- "
                             "starting with a letter or digit")
        if len(password) < MIN_PASSWORD:
            raise InputError(f"the password of '{name}' must have at least {MIN_PASSWORD} "
                             "characters")
        if role is Role.INGEST:
            raise InputError("ingest is a role for device tokens, not for users: use "
                             "`sensorlake tokens create --role ingest`")
        if self.catalog.execute("SELECT 1 FROM users WHERE tenant=? AND name=?", (tenant, name)):
            raise InputError(f"user '{name}' already exists in tenant '{tenant}'")
        uid = "u" + secrets.token_hex(12)
        self.catalog.write([(
            "INSERT INTO users (uid, tenant, name, role, password_hash, window_start,"
            " window_end, created_at) VALUES (?,?,?,?,?,?,?,?)",
            (uid, tenant, name, role.value, self.hasher.hash(password), window[0], window[1],
             datetime.now(UTC).isoformat()))])
        return self.get(tenant, name)

    def get(self, tenant: str, name: str) -> User:
        rows = self._select("WHERE tenant=? AND name=? AND disabled_at IS NULL", (tenant, name))
        if not rows:
            raise NotFound(f"no user '{name}' in tenant '{tenant}' (see `sensorlake users "
                           "list`)")
        return rows[0]

    def list(self, tenant: str | None = None) -> list[User]:
        if tenant is None:
            return self._select("ORDER BY tenant, name", ())
        return self._select("WHERE tenant=? ORDER BY name", (tenant,))

    def remove(self, tenant: str, name: str) -> User:
        """Disable the user (the row stays so its uid is never reused) and end its tokens."""
        user = self.get(tenant, name)
        self.catalog.write([
            ("UPDATE users SET disabled_at=?, name=name || '#' || uid WHERE uid=?",
             (datetime.now(UTC).isoformat(), user.uid)),
            ("DELETE FROM grants WHERE user_uid=?", (user.uid,))])
        self.tokens.revoke_user(user.uid)
        return user

    def login(self, tenant: str, name: str, password: str,
              hours: float) -> tuple[str, TokenInfo]:
        """A session token for a correct name and password, else AuthError(401)."""
        rows = self.catalog.execute(
            "SELECT uid, role, password_hash FROM users WHERE tenant=? AND name=? AND"
            " disabled_at IS NULL", (tenant, name))
        stored = rows[0][2] if rows else self._dummy_hash()
        try:
            self.hasher.verify(stored, password)
            ok = bool(rows)
        except (VerificationError, InvalidHashError):
            ok = False
        if not ok:
            raise AuthError("wrong tenant, user name or password")
        uid, role, _ = rows[0]
        if self.hasher.check_needs_rehash(stored):
            self.catalog.write([("UPDATE users SET password_hash=? WHERE uid=?",
                                 (self.hasher.hash(password), uid))], bump=False)
        return self.tokens.create(Role(role), tenant, label=f"session of {name}",
                                  expires_in=timedelta(hours=hours), user_uid=uid,
                                  kind="session")

    def _select(self, where: str, params: tuple) -> list[User]:
        rows = self.catalog.execute(
            "SELECT uid, tenant, name, role, window_start, window_end, created_at, disabled_at"
            f" FROM users {where}", params)
        return [User(r[0], r[1], r[2], Role(r[3]), r[4], r[5], r[6], r[7]) for r in rows]
