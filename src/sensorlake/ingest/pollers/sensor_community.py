"""The Sensor.Community open-data poller and the route that accepts the same files.

    poll_once(settings, target)      fetch `sensor_community.url` once, deliver it
    RuntimeTarget(runtime)           deliver in-process (the job, `sensorlake poll` alone)
    ServerTarget(url, token)         deliver to a running `sensorlake up` over HTTP

The job `sensor-community` (registered here, loaded through `ops/builtin.py: EXTENSIONS`)
runs one poll inside `sensorlake up`; it is off until scheduled
(`[jobs.schedules] sensor-community = "every 5m"`) or run (`sensorlake jobs run`).

A file is a JSON array of records. Each record becomes one envelope of codec
`sensor_community` for device `sc-<sensor id>`, with message id `sc/<sensor>/<timestamp>`:
the next poll returns most records again, and the log (then the hot store) ignores what it
already holds. Sensors are registered as `sc-<id>` (type `sensor-community`, location from
the record); a moved sensor gets its new location, nothing else of a device is touched.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import orjson

from sensorlake import __version__
from sensorlake.catalog import Catalog
from sensorlake.decode.rows import number
from sensorlake.errors import InputError, TransientError
from sensorlake.log.base import AppendResult, Envelope
from sensorlake.ops.jobs import JobContext, register_job
from sensorlake.registry import Device, DeviceRegistry, is_valid_device_id

if TYPE_CHECKING:
    from sensorlake.config import Settings
    from sensorlake.runtime import Runtime

CODEC = "sensor_community"
DEVICE_TYPE = "sensor-community"
RECORDS_PER_POST = 2000


@dataclass
class PollResult:
    """What one delivery did (summed over the chunks of a poll)."""

    records: int = 0
    new: int = 0
    seen: int = 0
    """Records the log already held (the same sensor and timestamp as an earlier poll)."""
    sensors_registered: int = 0
    unusable: int = 0
    """Records without a sensor id or timestamp (sent to the quarantine)."""

    def add(self, other: PollResult) -> None:
        for name in ("records", "new", "seen", "sensors_registered", "unusable"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def row(self) -> dict[str, Any]:
        return {"records": self.records, "new": self.new, "seen": self.seen,
                "sensors_registered": self.sensors_registered, "unusable": self.unusable}


@dataclass
class OpenData:
    envelopes: list[Envelope] = field(default_factory=list)
    sensors: dict[str, Device] = field(default_factory=dict)
    unusable: int = 0


def records_of(body: bytes) -> list[Any]:
    try:
        records = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"not a Sensor.Community data file: invalid JSON at byte {exc.pos}: "
                         f"{exc.msg}") from None
    if not isinstance(records, list):
        raise InputError("not a Sensor.Community data file: expected a JSON array of records")
    return records


def _sensor(record: dict[str, Any], tenant: str, device: str) -> Device:
    location = record.get("location") if isinstance(record.get("location"), dict) else {}
    sensor = record.get("sensor") if isinstance(record.get("sensor"), dict) else {}
    kind = sensor.get("sensor_type") if isinstance(sensor.get("sensor_type"), dict) else {}
    lat, lon = number(location.get("latitude")), number(location.get("longitude"))
    tags = {"source": "sensor.community", "sensor_type": str(kind.get("name", "")),
            "location_id": str(location.get("id", "")),
            "country": str(location.get("country", "")),
            "indoor": str(location.get("indoor", ""))}
    return Device(id=device, tenant=tenant, type=DEVICE_TYPE, name=str(kind.get("name", "")),
                  lat=lat if lat is not None and -90 <= lat <= 90 else None,
                  lon=lon if lon is not None and -180 <= lon <= 180 else None,
                  alt=number(location.get("altitude")), tags=tags)


def split_records(body: bytes, tenant: str, source: str, received_at_us: int,
                  sensor_ids: Sequence[int] = ()) -> OpenData:
    """One envelope per record (kept as its JSON), and the sensors they come from."""
    keep = set(sensor_ids)
    data = OpenData()
    for record in records_of(body):
        sensor = record.get("sensor") if isinstance(record, dict) else None
        sensor_id = sensor.get("id") if isinstance(sensor, dict) else None
        stamp = record.get("timestamp") if isinstance(record, dict) else None
        if keep and sensor_id not in keep:
            continue
        payload = orjson.dumps(record)
        device = f"sc-{sensor_id}"
        if not isinstance(sensor_id, int) or not isinstance(stamp, str) or \
                not is_valid_device_id(device):
            data.unusable += 1
            digest = hashlib.blake2b(payload, digest_size=16).hexdigest()
            data.envelopes.append(Envelope(f"{tenant}/?/sc/{digest}", tenant, "", source,
                                           CODEC, payload, received_at_us))
            continue
        data.envelopes.append(Envelope(f"{tenant}/{device}/sc/{stamp}", tenant, device,
                                       source, CODEC, payload, received_at_us))
        data.sensors.setdefault(device, _sensor(record, tenant, device))
    return data


def register_sensors(catalog: Catalog, sensors: dict[str, Device]) -> int:
    """Register unknown sensors; move known ones whose location changed. Returns how many
    devices were added or moved."""
    if not sensors:
        return 0
    tenant = next(iter(sensors.values())).tenant
    ids = sorted(sensors)
    known: dict[str, tuple] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        for row in catalog.execute(
                f"SELECT id, lat, lon, alt FROM devices WHERE tenant=? AND id IN "
                f"({','.join('?' * len(chunk))})", (tenant, *chunk)):
            known[row[0]] = tuple(row[1:])
    new = [d for d in sensors.values() if d.id not in known]
    moved = [d for d in sensors.values()
             if d.id in known and known[d.id] != (d.lat, d.lon, d.alt) and d.lat is not None]
    if new:
        DeviceRegistry(catalog).upsert(new)
    if moved:
        catalog.write([("UPDATE devices SET lat=?, lon=?, alt=? WHERE tenant=? AND id=?",
                        (d.lat, d.lon, d.alt, d.tenant, d.id)) for d in moved])
    return len(new) + len(moved)


def prepare(runtime: Runtime, tenant: str, body: bytes, source: str) -> tuple[OpenData, int]:
    """Split a file and register its sensors (before the append, so that the worker finds
    them). Returns the envelopes and the number of sensors added or moved."""
    settings = runtime.settings.sensor_community
    data = split_records(body, tenant, source, time.time_ns() // 1000, settings.sensor_ids)
    registered = register_sensors(runtime.catalog, data.sensors)
    if registered:
        runtime.refresh_context()
    return data, registered


def result_of(data: OpenData, registered: int, appended: AppendResult) -> PollResult:
    return PollResult(records=len(data.envelopes), new=appended.accepted,
                      seen=appended.duplicates, sensors_registered=registered,
                      unusable=data.unusable)


class Target(Protocol):
    def deliver(self, body: bytes, source: str) -> PollResult: ...


class RuntimeTarget:
    """Deliver into a Runtime of this process (blocks until durable)."""

    def __init__(self, runtime: Runtime, tenant: str | None = None) -> None:
        self.runtime = runtime
        self.tenant = tenant or runtime.settings.default_tenant

    def deliver(self, body: bytes, source: str) -> PollResult:
        data, registered = prepare(self.runtime, self.tenant, body, source)
        appended = self.runtime.log.append(data.envelopes) if data.envelopes \
            else AppendResult()
        return result_of(data, registered, appended)


class ServerTarget:
    """Deliver to `POST /api/v1/integrations/sensor-community` of a running server, in
    chunks that fit its body limit; 503 is retried after Retry-After."""

    def __init__(self, url: str, token: str, client: httpx.Client | None = None,
                 attempts: int = 30) -> None:
        self.url = url.rstrip("/") + "/api/v1/integrations/sensor-community"
        self.token = token
        self.client = client or httpx.Client(timeout=60)
        self.attempts = attempts

    def deliver(self, body: bytes, source: str) -> PollResult:
        records = records_of(body)
        total = PollResult()
        for start in range(0, len(records), RECORDS_PER_POST):
            chunk = orjson.dumps(records[start:start + RECORDS_PER_POST])
            total.add(PollResult(**self._post(chunk, source)))
        return total

    def _post(self, chunk: bytes, source: str) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.token}", "X-Source": source,
                   "Content-Type": "application/json"}
        for _ in range(self.attempts):
            response = self.client.post(self.url, content=chunk, headers=headers)
            if response.status_code == 503:
                time.sleep(float(response.headers.get("Retry-After", "1")))
                continue
            if response.status_code != 200:
                raise TransientError(f"{self.url} answered {response.status_code}: "
                                     f"{response.text[:300]}")
            return {k: v for k, v in response.json().items() if k in PollResult.__annotations__}
        raise TransientError(f"{self.url} stayed unavailable (503) for {self.attempts} tries")


def fetch(url: str, timeout: float, client: httpx.Client | None = None) -> bytes:
    """The file at `url` (TransientError when it cannot be had now)."""
    own = client is None
    client = client or httpx.Client(timeout=timeout, follow_redirects=True,
                                    headers={"User-Agent": f"sensorlake/{__version__}"})
    try:
        response = client.get(url, timeout=timeout)
        response.raise_for_status()
        return response.content
    except httpx.HTTPError as exc:
        raise TransientError(f"cannot fetch {url}: {exc}") from exc
    finally:
        if own:
            client.close()


def poll_once(settings: Settings, target: Target, url: str | None = None,
              client: httpx.Client | None = None) -> PollResult:
    """Fetch the open-data file once and deliver it: the unit a scheduled job runs."""
    url = url or settings.sensor_community.url
    body = fetch(url, settings.sensor_community.timeout_seconds, client)
    return target.deliver(body, f"poll:{url}")


def sensor_community_job(ctx: JobContext) -> dict[str, Any]:
    """Poll the Sensor.Community open data once (sensor_community.url, or params.url)."""
    ctx.progress(done=0, total=1, message="fetching")
    result = poll_once(ctx.runtime.settings, RuntimeTarget(ctx.runtime), url=ctx.params.get("url"))
    ctx.progress(done=1, total=1, rows_done=result.new, force=True)
    return result.row()


register_job("sensor-community", sensor_community_job, None)
