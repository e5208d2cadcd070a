"""Which registered device an external identity belongs to: a LoRaWAN DevEUI, an airrohr
chip id. A device claims one with a tag (`sensorlake devices add my-node --tag
dev_eui=0101010101010101`, `--tag chip_id=12345678`); values compare case-insensitively.

The index is rebuilt from the catalog whenever any process changed the registry (the
catalog's change number is checked on every lookup, so a device registered a moment ago is
found at once).
"""

from __future__ import annotations

import threading
import weakref

from sensorlake.catalog import Catalog

TAGS = ("dev_eui", "chip_id")


class ExternalIds:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._lock = threading.Lock()
        self._version = -1
        self._index: dict[tuple[str, str, str], str] = {}

    def resolve(self, tenant: str, tag: str, value: str) -> str | None:
        """The id of the device of `tenant` whose tag `tag` equals `value`, if any."""
        with self._lock:
            version = self.catalog.change_number()
            if version != self._version:
                self._index = self._load()
                self._version = version
            return self._index.get((tenant, tag, value.strip().lower()))

    def _load(self) -> dict[tuple[str, str, str], str]:
        columns = ", ".join(f"json_extract(tags, '$.{tag}')" for tag in TAGS)
        rows = self.catalog.execute(f"SELECT tenant, id, {columns} FROM devices")
        index: dict[tuple[str, str, str], str] = {}
        for tenant, device, *values in rows:
            for tag, value in zip(TAGS, values, strict=True):
                if value is not None:
                    index[(tenant, tag, str(value).strip().lower())] = device
        return index


_by_catalog: weakref.WeakKeyDictionary[Catalog, ExternalIds] = weakref.WeakKeyDictionary()
_guard = threading.Lock()


def external_ids(catalog: Catalog) -> ExternalIds:
    """The (shared) index of one catalog."""
    with _guard:
        ids = _by_catalog.get(catalog)
        if ids is None:
            ids = _by_catalog[catalog] = ExternalIds(catalog)
        return ids
