"""Credentials, tenants and authorization.

    tokens.py     `slk_` tokens (hashed), roles, scopes, the ingest check `authorize()`
    users.py      users with Argon2id passwords; login opens a session token
    tenants.py    tenant uids
    policies.py   Cedar: one decision per request, and the device scope of list routes
    grants.py     links of the guest and utility templates
    audit.py      who granted, created, revoked or changed what
    ratelimit.py  per-token request budgets (429 + Retry-After)
"""

from sensorlake.auth.tokens import Principal, Role, TokenStore, authorize

__all__ = ["Principal", "Role", "TokenStore", "authorize"]
