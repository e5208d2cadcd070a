"""Tenants: a name, and a random uid that Cedar entities and grants refer to."""

from __future__ import annotations

import secrets
import threading
from datetime import UTC, datetime

from sensorlake.catalog import Catalog


class TenantStore:
    """Tenants come into being on first use (a device, a token or a user names them)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._uids: dict[str, str] = {}
        self._lock = threading.Lock()

    def uid(self, tenant: str) -> str:
        with self._lock:
            known = self._uids.get(tenant)
        if known:
            return known
        rows = self.catalog.execute("SELECT uid FROM tenants WHERE id=?", (tenant,))
        if not rows:
            self.catalog.write([("INSERT OR IGNORE INTO tenants (id, uid, created_at)"
                                 " VALUES (?,?,?)", (tenant, "t" + secrets.token_hex(12),
                                                     datetime.now(UTC).isoformat()))],
                               bump=False)
            rows = self.catalog.execute("SELECT uid FROM tenants WHERE id=?", (tenant,))
        with self._lock:
            self._uids[tenant] = rows[0][0]
        return str(rows[0][0])

    def list(self) -> list[str]:
        """Every tenant that has devices, tokens or users."""
        rows = self.catalog.execute(
            "SELECT tenant FROM devices UNION SELECT tenant FROM tokens UNION "
            "SELECT tenant FROM users UNION SELECT id FROM tenants ORDER BY 1")
        return [r[0] for r in rows]
