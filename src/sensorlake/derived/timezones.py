"""Which local time zone a device's days, months and tariffs follow.

Order: the device's `tz` tag, else `[time] tenants.<tenant>`, else `[time] timezone`
(default UTC). Names are IANA zones (`Europe/London`); a wrong name is a configuration
error that names the device or tenant.
"""

from __future__ import annotations

from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sensorlake.errors import ConfigError

TZ_TAG = "tz"


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    """The ZoneInfo of an IANA name (ConfigError if unknown)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"unknown time zone '{name}': use an IANA name such as "
                          "'Europe/London' or 'UTC'") from None


def device_timezone(tags: dict[str, str], tenant: str, tenants: dict[str, str],
                    default: str) -> str:
    """The zone name for a device with these tags in this tenant."""
    name = tags.get(TZ_TAG) or tenants.get(tenant) or default
    zone(name)
    return name
