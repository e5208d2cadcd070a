"""Quarantine reasons in plain words: what kind of problem, how often, and what to do.

Reasons in the quarantine are precise ("aq-7: humidity=140.0 is outside the valid range
[0.0, 100.0] %"); status groups them into the few kinds a person acts on. The table is data:
the first pattern a reason contains decides its kind.
"""

from __future__ import annotations

from typing import Any

KINDS: list[tuple[str, str, str]] = [
    ("is not registered", "readings from devices that are not registered",
     "register them (`sensorlake devices add ID`, or `devices import FILE`), or set "
     "ingest.auto_register = true"),
    ("unknown metric", "metrics sensorlake does not know",
     "declare them under [metrics] in sensorlake.toml (docs/configuration.md), or fix the "
     "device's metric names"),
    ("outside the valid range", "values outside the metric's valid range",
     "check the sensor and its units (pressure in hPa, not Pa); change the range under "
     "[metrics] if the values are real"),
    ("is in the future", "timestamps in the future", "set the device clocks (NTP)"),
    ("is not a time", "times that cannot be read (imports)",
     "give the mapping file a ts_format (e.g. \"%d/%m/%Y %H:%M\") or fix the column"),
    ("every row needs a device id", "rows without a device id (imports)",
     "fill the device column, or use device_value in the mapping file"),
    ("timestamp", "timestamps that are too old or unreadable",
     "set the device clocks; readings before validation.earliest are refused"),
    ("invalid JSON", "messages that are not valid JSON",
     "fix the sender's payload; the raw bytes are in `sensorlake quarantine list -f json`"),
    ("is not a number", "values that are not numbers", "send numbers, not text"),
    ("not a finite number", "values that are not finite (NaN, infinity)",
     "fix the sensor driver"),
    ("unknown codec", "messages for a codec that is not installed",
     "install the codec's plugin or fix the source's codec name"),
    ("internal error", "messages that crashed a stage (a sensorlake bug)",
     "report it with a message from `sensorlake quarantine list -f json`"),
]
OTHER = ("other problems", "read them with `sensorlake quarantine list`")


def classify(reason: str) -> tuple[str, str]:
    """(what, what to do) for one quarantine reason."""
    for pattern, what, do in KINDS:
        if pattern in reason:
            return what, do
    return OTHER


def plain_reasons(quarantine: Any, tenant: str | None, limit: int = 5,
                  scan: int = 1000) -> list[dict[str, Any]]:
    """The most frequent kinds of problem among the `scan` most frequent distinct reasons."""
    reasons = getattr(quarantine, "reasons", None)
    if reasons is None:
        return []
    groups: dict[str, dict[str, Any]] = {}
    for reason, count in reasons(tenant, limit=scan):
        what, do = classify(reason)
        group = groups.setdefault(what, {"what": what, "count": 0, "do": do,
                                         "example": reason})
        group["count"] += count
    return sorted(groups.values(), key=lambda g: -g["count"])[:limit]
