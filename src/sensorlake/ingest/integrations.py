"""The HTTP integrations of other systems, framework-independent like `ingest/http.py`:

    accept_lorawan(runtime, "chirpstack" | "tts", ...)  ChirpStack HTTP integration, TTS webhook
    accept_airrohr(runtime, ...)                        airrohr firmware "send to own API"
    accept_open_data(runtime, ...)                      a Sensor.Community data file

Each authenticates (Bearer/Token, or basic auth with the token as password: what the
airrohr firmware can send), reads the body within `http.max_body_bytes` (gzip too), turns it
into envelopes reading only identity fields, and answers 200 only after the durable append.
An event that names no device is still appended (it reaches the quarantine) and answered
400; an event that is not an uplink (ChirpStack `?event=join`, a TTS join-accept) is
answered 200 and not stored.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import orjson

from sensorlake.auth.tokens import Action, Principal, authorize
from sensorlake.errors import AuthError, InputError
from sensorlake.ingest.body import BodyTooLarge, read_body
from sensorlake.ingest.http import Reply
from sensorlake.ingest.identity import external_ids
from sensorlake.ingest.lorawan import lorawan_envelope
from sensorlake.ingest.pollers import sensor_community
from sensorlake.ingest.submit import append, bearer_or_basic
from sensorlake.log.base import AppendResult, Envelope
from sensorlake.registry import is_valid_device_id

if TYPE_CHECKING:
    from sensorlake.runtime import Runtime

Chunks = AsyncIterator[bytes]


def _error(status: int, detail: Any, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, {"detail": detail}, headers or {})


async def _open(runtime: Runtime, authorization: str | None, chunks: Chunks,
                content_length: str | None, content_encoding: str | None
                ) -> tuple[Principal, bytes]:
    principal = runtime.tokens.verify(bearer_or_basic(authorization))
    authorize(principal, Action.WRITE, principal.tenant)
    body = await read_body(chunks, runtime.settings.http.max_body_bytes, content_length,
                           content_encoding)
    if not body.strip():
        raise InputError("empty body")
    return principal, body


def _refused(exc: Exception) -> Reply:
    if isinstance(exc, AuthError):
        return _error(exc.status, str(exc),
                      {"WWW-Authenticate": 'Bearer, Basic realm="sensorlake"'}
                      if exc.status == 401 else None)
    if isinstance(exc, BodyTooLarge):
        return _error(413, str(exc))
    return _error(400, str(exc))


def _stored(result: AppendResult, error: str | None = None) -> Reply:
    if error is not None:
        return _error(400, {"error": error, "quarantined": 1})
    return Reply(200, {"accepted": result.accepted, "duplicates": result.duplicates})


async def accept_lorawan(runtime: Runtime, codec: str, authorization: str | None,
                         chunks: Chunks, content_length: str | None,
                         content_encoding: str | None, event: str = "up") -> Reply:
    """One ChirpStack (`codec="chirpstack"`) or The Things Stack (`"tts"`) event."""
    try:
        principal, body = await _open(runtime, authorization, chunks, content_length,
                                      content_encoding)
        if event != "up":
            return Reply(200, {"ignored": f"event '{event}' (only 'up' carries readings)"})
        attribution = lorawan_envelope(codec, body, principal.tenant,
                                       external_ids(runtime.catalog), f"http:{codec}",
                                       time.time_ns() // 1000, principal.device_id)
    except (AuthError, InputError) as exc:
        return _refused(exc)
    if attribution.envelope is None:
        return Reply(200, {"ignored": attribution.ignored})
    stored = await append(runtime, [attribution.envelope])
    return stored if isinstance(stored, Reply) else _stored(stored, attribution.error)


def airrohr_device(runtime: Runtime, tenant: str, sensor: str | None, body: bytes
                   ) -> str:
    """The device of an airrohr POST: the device tagged chip_id=<chip id>, else the
    X-Sensor value itself (`esp8266-12345678`)."""
    name = (sensor or "").strip()
    if not name:
        try:
            chip = orjson.loads(body).get("esp8266id")
        except (orjson.JSONDecodeError, AttributeError):
            chip = None
        name = f"esp8266-{chip}" if chip else ""
    chip_id = name.rpartition("-")[2]
    bound = external_ids(runtime.catalog).resolve(tenant, "chip_id", chip_id) if chip_id \
        else None
    return bound or (name if is_valid_device_id(name) else "")


async def accept_airrohr(runtime: Runtime, authorization: str | None, chunks: Chunks,
                         content_length: str | None, content_encoding: str | None,
                         sensor: str | None, pin: str | None) -> Reply:
    try:
        principal, body = await _open(runtime, authorization, chunks, content_length,
                                      content_encoding)
        device = airrohr_device(runtime, principal.tenant, sensor, body)
        authorize(principal, Action.WRITE, principal.tenant, device or None)
        if principal.device_id is not None:
            device = principal.device_id
    except (AuthError, InputError) as exc:
        return _refused(exc)
    error = None if device else "no device: send the X-Sensor header (esp8266-<chip id>)"
    source = f"http:airrohr X-Sensor={sensor or ''} X-Pin={pin or ''}"
    envelope = Envelope(f"{principal.tenant}/{device or '?'}/uuid/{uuid.uuid4().hex}",
                        principal.tenant, device, source, "airrohr", body,
                        time.time_ns() // 1000)
    stored = await append(runtime, [envelope])
    return stored if isinstance(stored, Reply) else _stored(stored, error)


async def accept_open_data(runtime: Runtime, authorization: str | None, chunks: Chunks,
                           content_length: str | None, content_encoding: str | None,
                           source: str | None) -> Reply:
    """A Sensor.Community data file (JSON array of records), as the poller sends it."""
    try:
        principal, body = await _open(runtime, authorization, chunks, content_length,
                                      content_encoding)
        if principal.device_id is not None:
            raise AuthError("a token bound to one device cannot deliver open data for many "
                            "sensors; use an unbound ingest token", status=403)
        data, registered = sensor_community.prepare(
            runtime, principal.tenant, body, source or "http:sensor-community")
    except (AuthError, InputError) as exc:
        return _refused(exc)
    stored = await append(runtime, data.envelopes)
    if isinstance(stored, Reply):
        return stored
    return Reply(200, sensor_community.result_of(data, registered, stored).row())
