"""Credentials and the principal a request acts as.

This is the seam for tenancy and policies: today a token carries a role (owner or ingest),
a tenant and optionally one device; `authorize()` is the single decision point every route
calls, so a policy engine can replace it without touching the routes.
"""

from sensorlake.auth.tokens import Principal, Role, TokenStore, authorize

__all__ = ["Principal", "Role", "TokenStore", "authorize"]
