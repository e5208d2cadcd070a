"""Devices: list (the caller's scope), create, read, update, delete; every change audited."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from sensorlake.api.access import AccessDep
from sensorlake.api.deps import RuntimeDep
from sensorlake.api.routes.readings import ERRORS
from sensorlake.auth.audit import actor_of
from sensorlake.registry import DEVICE_ID_PATTERN, Calibration, Device

router = APIRouter(prefix="/api/v1", tags=["devices"])

DEVICE_EXAMPLE = {"id": "aq-0001", "type": "air_quality", "name": "Station 1", "lat": 52.09,
                  "lon": 5.12, "alt": 5.0, "tags": {"network": "city"},
                  "calibration": {"pm2_5": {"scale": 1.1, "offset": -0.5}}, "public": True}


class DeviceFields(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str = Field("generic", max_length=64, description="Device type; energy devices "
                      "start with `energy`.")
    name: str = Field("", max_length=256)
    lat: float | None = Field(None, ge=-90, le=90, description="Static latitude (WGS 84).")
    lon: float | None = Field(None, ge=-180, le=180, description="Static longitude (WGS 84).")
    alt: float | None = Field(None, ge=-1000, le=100000, description="Altitude in metres.")
    tags: dict[str, str] = Field(default_factory=dict, max_length=64)
    calibration: dict[str, Calibration] = Field(default_factory=dict, max_length=64)
    public: bool = Field(False, description="Shown to everyone: public map and latest values.")


class DeviceCreate(DeviceFields):
    """A new device (unknown fields are rejected)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [DEVICE_EXAMPLE]})
    id: str = Field(pattern=DEVICE_ID_PATTERN, description="Unique within the tenant.")


class DeviceUpdate(BaseModel):
    """Fields to change; the others keep their values (unknown fields are rejected)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"name": "Station 1 (roof)", "public": False}]})
    type: str | None = Field(None, max_length=64)
    name: str | None = Field(None, max_length=256)
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)
    alt: float | None = Field(None, ge=-1000, le=100000)
    tags: dict[str, str] | None = Field(None, max_length=64)
    calibration: dict[str, Calibration] | None = Field(None, max_length=64)
    public: bool | None = None


class DeviceRead(DeviceFields):
    """A registered device as the API shows it."""

    model_config = ConfigDict(json_schema_extra={"examples": [DEVICE_EXAMPLE]})
    id: str


class DeviceList(BaseModel):
    meta: dict[str, Any] = Field(examples=[{"tenant": "default", "count": 1}])
    results: list[DeviceRead]


def _read(device: Device) -> DeviceRead:
    return DeviceRead.model_validate(device.model_dump(exclude={"tenant"}))


@router.get("/devices", summary="Devices you may read", response_model=DeviceList,
            responses=ERRORS)
def list_devices(runtime: RuntimeDep, access: AccessDep) -> DeviceList:
    scope = access.tenant("list_devices")
    devices = [d for d in runtime.registry.list(access.tenant_id) if scope.allows(d.id)]
    return DeviceList(meta={"tenant": access.tenant_id, "count": len(devices)},
                      results=[_read(d) for d in devices])


@router.post("/devices", summary="Register a device", status_code=201,
             response_model=DeviceRead,
             responses={409: {"description": "A device with this id exists"}, **ERRORS})
def create_device(body: DeviceCreate, runtime: RuntimeDep, access: AccessDep) -> DeviceRead:
    access.require("create_device")
    tenant = access.tenant_id
    if runtime.auth.authorizer.device(tenant, body.id) is not None:
        raise HTTPException(409, f"device '{body.id}' already exists: change it with PATCH "
                            f"/api/v1/devices/{body.id}")
    device = Device(tenant=tenant, **body.model_dump())
    runtime.registry.add(device)
    runtime.auth.audit.record(tenant, actor_of(access.principal), "device.create", body.id,
                              **body.model_dump(exclude={"id"}))
    return _read(device)


@router.get("/devices/{device_id}", summary="One device", response_model=DeviceRead,
            responses=ERRORS)
def get_device(device_id: str, runtime: RuntimeDep, access: AccessDep) -> DeviceRead:
    access.device(device_id, "read_device")
    return _read(runtime.registry.get(access.tenant_id, device_id))


@router.patch("/devices/{device_id}", summary="Change a device", response_model=DeviceRead,
              responses=ERRORS)
def update_device(device_id: str, body: DeviceUpdate, runtime: RuntimeDep,
                  access: AccessDep) -> DeviceRead:
    access.device(device_id, "update_device")
    current = runtime.registry.get(access.tenant_id, device_id)
    changes = body.model_dump(exclude_unset=True)
    device = Device.model_validate({**current.model_dump(), **{
        k: v for k, v in changes.items() if v is not None or k in ("lat", "lon", "alt")}})
    runtime.registry.upsert([device])
    runtime.auth.audit.record(access.tenant_id, actor_of(access.principal), "device.update",
                              device_id, **changes)
    return _read(device)


@router.delete("/devices/{device_id}", summary="Remove a device (its readings stay)",
               status_code=204, responses=ERRORS)
def delete_device(device_id: str, runtime: RuntimeDep, access: AccessDep) -> Response:
    access.device(device_id, "delete_device")
    runtime.registry.remove(access.tenant_id, device_id)
    runtime.auth.audit.record(access.tenant_id, actor_of(access.principal), "device.delete",
                              device_id)
    return Response(status_code=204)
