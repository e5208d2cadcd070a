"""Everything the API needs to authenticate and authorize, built once per process."""

from __future__ import annotations

from sensorlake.auth.audit import AuditLog
from sensorlake.auth.grants import GrantStore
from sensorlake.auth.policies import Authorizer
from sensorlake.auth.ratelimit import RateLimiter
from sensorlake.auth.tenants import TenantStore
from sensorlake.auth.tokens import TokenStore
from sensorlake.auth.users import UserStore
from sensorlake.catalog import Catalog
from sensorlake.config import Settings
from sensorlake.registry import DeviceRegistry


class AuthServices:
    """Tenants, users, grants, audit, the Cedar authorizer and the rate limiter."""

    def __init__(self, catalog: Catalog, registry: DeviceRegistry, tokens: TokenStore,
                 settings: Settings) -> None:
        self.tokens = tokens
        self.tenants = TenantStore(catalog)
        self.users = UserStore(catalog, tokens)
        self.grants = GrantStore(catalog, self.users, registry, self.tenants)
        self.audit = AuditLog(catalog)
        self.authorizer = Authorizer(catalog, self.tenants, settings.auth.policies_file)
        self.rate_limiter = RateLimiter()
