"""Which subscription a topic belongs to, and the device its topic names.

The broker's ACL (`pattern write sensorlake/%u/up`) lets a device publish only on its own
topic, so the topic's device level is the authenticated device; ingest then re-checks that
the envelope claims that same device.
"""

from __future__ import annotations

from dataclasses import dataclass

from sensorlake.config import MqttSettings, MqttSubscription
from sensorlake.registry import is_valid_device_id

CACHE_LIMIT = 100_000


@dataclass(frozen=True)
class Route:
    """Where a topic's messages go: tenant, device (None: the topic names no valid device),
    codec and the subscription's name."""

    name: str
    tenant: str
    device: str | None
    codec: str


@dataclass(frozen=True)
class _Filter:
    name: str
    levels: tuple[str, ...]
    sub: MqttSubscription
    tenant: str

    def match(self, parts: list[str]) -> bool:
        levels = self.levels
        if levels and levels[-1] == "#":
            if len(parts) < len(levels) - 1:
                return False
            levels = levels[:-1]
        elif len(parts) != len(levels):
            return False
        return all(f == "+" or f == p for f, p in zip(levels, parts, strict=False))


def subscribe_topic(sub: MqttSubscription, shared_group: str | None) -> str:
    """The filter sent in SUBSCRIBE (`$share/<group>/...` when shared)."""
    return f"$share/{shared_group}/{sub.topic}" if shared_group else sub.topic


class TopicRouter:
    """Topic -> Route, cached (a fleet reuses the same few thousand topics)."""

    def __init__(self, settings: MqttSettings, default_tenant: str) -> None:
        self.filters = [_Filter(name, tuple(sub.topic.split("/")), sub,
                                sub.tenant or default_tenant)
                        for name, sub in settings.subscriptions.items()]
        self._cache: dict[str, Route | None] = {}

    def route(self, topic: str) -> Route | None:
        """The route of `topic`, or None when no subscription matches it."""
        try:
            return self._cache[topic]
        except KeyError:
            pass
        parts = topic.split("/")
        found: Route | None = None
        for flt in self.filters:
            if flt.match(parts):
                level = flt.sub.device_level
                device = parts[level] if level < len(parts) else None
                found = Route(flt.name, flt.tenant,
                              device if device and is_valid_device_id(device) else None,
                              flt.sub.codec)
                break
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        self._cache[topic] = found
        return found
