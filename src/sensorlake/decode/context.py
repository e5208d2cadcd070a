"""What codecs may look at besides the bytes: the settings and each device's type and tags.

Codecs keep the registry protocol `decode(entries) -> Batch`, so the runtime hands them this
context once at start (`configure_codecs`). Without it (tests, scripts) every device is of
type `generic` with no tags and the settings come from the environment. The lookup runs once
per batch, for the devices of that batch only; a device type that has no `[device_types.*]`
section uses the defaults of `DeviceTypeSettings`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson

from sensorlake.config import DeviceTypeSettings, Settings

if TYPE_CHECKING:
    from sensorlake.catalog import Catalog

DEFAULT_TYPE = "generic"
SQL_CHUNK = 500


@dataclass(frozen=True)
class DeviceInfo:
    """A device as the codecs see it."""

    type: str = DEFAULT_TYPE
    tags: dict[str, str] = field(default_factory=dict)


DeviceLookup = Callable[[Sequence[tuple[str, str]]], dict[tuple[str, str], DeviceInfo]]
"""(tenant, device_id) pairs -> what the registry knows of them (missing = not registered)."""


def no_registry(pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], DeviceInfo]:
    return {}


def registry_lookup(catalog: Catalog) -> DeviceLookup:
    """A lookup reading device type and tags from the catalog, one query per batch."""

    def lookup(pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], DeviceInfo]:
        wanted = set(pairs)
        ids = sorted({device for _, device in wanted if device})
        found: dict[tuple[str, str], DeviceInfo] = {}
        for start in range(0, len(ids), SQL_CHUNK):
            chunk = ids[start:start + SQL_CHUNK]
            rows = catalog.execute(
                "SELECT tenant, id, type, tags FROM devices WHERE id IN "
                f"({','.join('?' * len(chunk))})", tuple(chunk))
            for tenant, device, type_, tags in rows:
                if (tenant, device) in wanted:
                    found[(tenant, device)] = DeviceInfo(type_, orjson.loads(tags))
        return found

    return lookup


@dataclass
class CodecContext:
    settings: Settings
    lookup: DeviceLookup = no_registry

    def devices(self, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], DeviceInfo]:
        """Type and tags for every pair (unregistered devices get the default type)."""
        unique = list(dict.fromkeys(pairs))
        known = self.lookup(unique) if unique else {}
        return {pair: known.get(pair, DeviceInfo()) for pair in unique}

    def device_type(self, name: str) -> DeviceTypeSettings:
        return self.settings.device_types.get(name) or DeviceTypeSettings()


_lock = threading.Lock()
_context: CodecContext | None = None


def configure_codecs(settings: Settings, lookup: DeviceLookup = no_registry) -> CodecContext:
    """Give the codecs the settings and the registry of the running process (one runtime per
    process: the last one configured wins). Returns the context, for `release_codecs`."""
    global _context
    with _lock:
        _context = CodecContext(settings, lookup)
        return _context


def release_codecs(context: CodecContext) -> None:
    """Forget `context` if it is still the configured one (its runtime is closing)."""
    global _context
    with _lock:
        if _context is context:
            _context = None


def reset_codecs() -> None:
    """Forget the configured context (tests)."""
    global _context
    with _lock:
        _context = None


def codec_context() -> CodecContext:
    global _context
    with _lock:
        if _context is None:
            _context = CodecContext(Settings())
        return _context
