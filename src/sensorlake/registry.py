"""The device registry: who the devices are, where they stand and how to calibrate them."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from sensorlake.catalog import Catalog
from sensorlake.errors import InputError, NotFound
from sensorlake.process.base import CALIBRATION_SCHEMA, DEVICE_SCHEMA

DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
_DEVICE_ID = re.compile(DEVICE_ID_PATTERN)


class Calibration(BaseModel):
    """stored value = raw value × scale + offset."""

    model_config = ConfigDict(extra="forbid")
    scale: float = 1.0
    offset: float = 0.0


class Device(BaseModel):
    """A registered device."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=DEVICE_ID_PATTERN, description="Unique within the tenant.")
    tenant: str = "default"
    type: str = Field("generic", description="Device type (selects codecs and simulators).")
    name: str = ""
    lat: float | None = Field(None, ge=-90, le=90, description="Static latitude (WGS 84).")
    lon: float | None = Field(None, ge=-180, le=180, description="Static longitude (WGS 84).")
    alt: float | None = Field(None, description="Static altitude in metres.")
    tags: dict[str, str] = Field(default_factory=dict)
    calibration: dict[str, Calibration] = Field(default_factory=dict)
    public: bool = Field(False, description="Shown to everyone (public map and latest values).")

    @field_validator("tags", mode="before")
    @classmethod
    def _stringify_tags(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): str(v) for k, v in value.items()}
        return value

    @field_validator("tags")
    @classmethod
    def _known_zone(cls, tags: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        """A new device's `tz` tag must be an IANA zone (days, months and tariffs follow it);
        rows already in the catalog load as they are (a read then names the bad tag)."""
        if "tz" in tags and not (info.context or {}).get("stored"):
            from sensorlake.derived.timezones import zone
            from sensorlake.errors import ConfigError

            try:
                zone(tags["tz"])
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return tags


def is_valid_device_id(device_id: str) -> bool:
    return bool(_DEVICE_ID.match(device_id))


class DeviceRegistry:
    """Devices stored in the catalog; a snapshot as Arrow tables feeds the stages."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def upsert(self, devices: list[Device]) -> None:
        now = datetime.now(UTC).isoformat()
        self.catalog.write([
            (
                """INSERT INTO devices (tenant, id, type, name, lat, lon, alt, tags, calibration,
                                        created_at, updated_at, public)
                   VALUES (?,?,?,?,?,?,?,?,?,?,?,?)
                   ON CONFLICT (tenant, id) DO UPDATE SET type=excluded.type,
                     name=excluded.name, lat=excluded.lat, lon=excluded.lon, alt=excluded.alt,
                     tags=excluded.tags, calibration=excluded.calibration,
                     updated_at=excluded.updated_at, public=excluded.public""",
                (d.tenant, d.id, d.type, d.name, d.lat, d.lon, d.alt,
                 orjson.dumps(d.tags).decode(),
                 orjson.dumps({k: v.model_dump() for k, v in d.calibration.items()}).decode(),
                 now, now, int(d.public)),
            )
            for d in devices
        ])

    def add(self, device: Device) -> None:
        self.upsert([device])

    def remove(self, tenant: str, device_id: str) -> None:
        self.get(tenant, device_id)
        self.catalog.write([("DELETE FROM devices WHERE tenant=? AND id=?", (tenant, device_id))])

    def get(self, tenant: str, device_id: str) -> Device:
        rows = self._select("WHERE tenant=? AND id=?", (tenant, device_id))
        if not rows:
            raise NotFound(f"device '{device_id}' is not registered in tenant '{tenant}': "
                           f"add it with `sensorlake devices add {device_id}`")
        return rows[0]

    def list(self, tenant: str | None = None) -> list[Device]:
        if tenant is None:
            return self._select("ORDER BY tenant, id", ())
        return self._select("WHERE tenant=? ORDER BY id", (tenant,))

    def _select(self, where: str, params: tuple) -> list[Device]:
        rows = self.catalog.execute(
            "SELECT tenant, id, type, name, lat, lon, alt, tags, calibration, public"
            f" FROM devices {where}", params)
        return [
            Device.model_validate(
                {"tenant": r[0], "id": r[1], "type": r[2], "name": r[3], "lat": r[4],
                 "lon": r[5], "alt": r[6], "tags": orjson.loads(r[7]),
                 "calibration": orjson.loads(r[8]), "public": bool(r[9])},
                context={"stored": True})
            for r in rows
        ]

    def uid(self, tenant: str, device_id: str) -> str:
        """The device's catalog uid: random, never reused (a device removed and added again
        gets a new one, so grants and policies never carry over to the newcomer)."""
        rows = self.catalog.execute("SELECT uid FROM devices WHERE tenant=? AND id=?",
                                    (tenant, device_id))
        if not rows:
            self.get(tenant, device_id)  # raises NotFound with the hint
        return str(rows[0][0])

    def uids(self, tenant: str) -> dict[str, str]:
        """device id -> uid for every device of `tenant`."""
        rows = self.catalog.execute("SELECT id, uid FROM devices WHERE tenant=?", (tenant,))
        return {r[0]: r[1] for r in rows}

    def import_file(self, path: Path, tenant: str | None = None) -> list[Device]:
        """Upsert the devices of a YAML or JSON file: a list, or `{devices: [...]}`."""
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise InputError(f"{path}: cannot read devices file: {exc}") from exc
        items = data.get("devices") if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise InputError(f"{path}: expected a list of devices or a 'devices:' list")
        devices: list[Device] = []
        for index, item in enumerate(items):
            if isinstance(item, dict) and tenant and "tenant" not in item:
                item = {**item, "tenant": tenant}
            try:
                devices.append(Device.model_validate(item))
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
                raise InputError(f"{path}: device #{index + 1}: {problems}") from exc
        self.upsert(devices)
        return devices

    def snapshot(self) -> tuple[pa.Table, pa.Table]:
        """(devices, calibrations) as Arrow tables for the stages."""
        devices = self.list()
        device_table = pa.Table.from_pylist(
            [{"tenant": d.tenant, "device_id": d.id, "static_lat": d.lat, "static_lon": d.lon,
              "static_alt": d.alt} for d in devices], schema=DEVICE_SCHEMA)
        calibration_table = pa.Table.from_pylist(
            [{"tenant": d.tenant, "device_id": d.id, "metric": metric, "scale": c.scale,
              "offset": c.offset}
             for d in devices for metric, c in d.calibration.items()], schema=CALIBRATION_SCHEMA)
        return device_table, calibration_table
