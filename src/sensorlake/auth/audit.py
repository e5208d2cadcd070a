"""The audit log: who granted, created, revoked or changed what, and when (never a secret)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from sensorlake.catalog import Catalog

AUDIT_COLUMNS = ["n", "at", "tenant", "actor", "action", "target", "detail"]


class AuditLog:
    """Append-only rows in the catalog's `audit` table."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def record(self, tenant: str, actor: str, action: str, target: str,
               **detail: Any) -> None:
        """One row; `detail` must never hold a token, a password or a hash."""
        self.catalog.write([(
            "INSERT INTO audit (at, tenant, actor, action, target, detail) VALUES (?,?,?,?,?,?)",
            (datetime.now(UTC).isoformat(), tenant, actor, action, target,
             orjson.dumps(detail, default=str).decode()))], bump=False)

    def list(self, tenant: str | None = None, limit: int = 100,
             action: str | None = None) -> list[dict[str, Any]]:
        """Newest first."""
        where, params = [], []
        if tenant is not None:
            where.append("tenant=?")
            params.append(tenant)
        if action is not None:
            where.append("action=?")
            params.append(action)
        sql = (f"SELECT {', '.join(AUDIT_COLUMNS)} FROM audit"
               + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY n DESC LIMIT ?")
        rows = self.catalog.execute(sql, (*params, limit))
        out = [dict(zip(AUDIT_COLUMNS, r, strict=True)) for r in rows]
        for row in out:
            row["detail"] = orjson.loads(row["detail"])
        return out


def actor_of(principal: Any) -> str:
    """How the audit log names who acted: the user, else the token id (never the token)."""
    if principal is None:
        return "cli"
    if getattr(principal, "user_name", None):
        return f"user:{principal.user_name}"
    return f"token:{principal.token_id}"
