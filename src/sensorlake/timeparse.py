"""Times and durations as people type them: ISO 8601, epoch ms, `now`, `-24h`, `1m`."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from sensorlake.errors import InputError

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(us|ms|s|m|h|d|w)$")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """`30s`, `1m`, `15m`, `1h`, `1d`, `1w` (also `500ms`)."""
    match = _DURATION.match(text.strip())
    if not match:
        raise InputError(f"'{text}' is not a duration: use a number and a unit, like 30s, 1m, "
                         "1h or 1d")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise InputError(f"duration '{text}' must be positive")
    return timedelta(seconds=seconds)


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """An instant: ISO 8601 (no zone = UTC), epoch milliseconds, `now`, or `-<duration>`."""
    now = now or datetime.now(UTC)
    value = text.strip()
    if value == "now":
        return now
    if value.startswith("-"):
        return now - parse_duration(value[1:])
    if value.isdigit():
        return datetime.fromtimestamp(int(value) / 1000, UTC)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(f"'{text}' is not a time: use ISO 8601 (2026-11-23T14:00:00Z), epoch "
                         "ms, 'now' or a relative time like -24h") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_duration(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
