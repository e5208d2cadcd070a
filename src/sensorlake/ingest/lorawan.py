"""LoRaWAN network-server events -> log envelopes (HTTP integrations here; MQTT can reuse it).

Ingest reads only what identity and idempotence need and keeps the bytes as received:
- the device: a registered device tagged `dev_eui=<DevEUI>`, else the DevEUI itself in lower
  case (ChirpStack), or TTS's `end_device_ids.device_id`;
- the message id: ChirpStack's `deduplicationId`, TTS's `as:up:` correlation id (else a hash
  of the bytes), so the same uplink delivered twice (HTTP retry, MQTT redelivery, both
  integrations at once) is stored once.
A body that names no device still goes to the log (device "") and so to the quarantine.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from sensorlake.errors import AuthError
from sensorlake.ingest.identity import ExternalIds
from sensorlake.log.base import Envelope
from sensorlake.registry import is_valid_device_id


@dataclass
class Attribution:
    """An event made into an envelope; `error` says why it names no device, `ignored` why
    it is not an uplink at all (then `envelope` is None)."""

    envelope: Envelope | None
    error: str | None = None
    ignored: str | None = None


def _digest(body: bytes) -> str:
    return hashlib.blake2b(body, digest_size=16).hexdigest()


def _get(doc: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc


def _identity(doc: Any, codec: str, tenant: str, ids: ExternalIds) -> tuple[str, str]:
    """(device id or "", message id suffix) of one event document."""
    if codec == "chirpstack":
        eui, name = _get(doc, "deviceInfo", "devEui"), None
        key = _get(doc, "deduplicationId")
    else:
        eui, name = _get(doc, "end_device_ids", "dev_eui"), _get(doc, "end_device_ids",
                                                                  "device_id")
        key = next((c for c in _get(doc, "correlation_ids") or []
                    if isinstance(c, str) and c.startswith("as:up:")), None)
    device = ""
    if isinstance(eui, str) and eui:
        device = ids.resolve(tenant, "dev_eui", eui) or ""
    if not device:
        for candidate in (name, eui.lower() if isinstance(eui, str) else None):
            if isinstance(candidate, str) and is_valid_device_id(candidate):
                device = candidate
                break
    return device, key if isinstance(key, str) and key else ""


def lorawan_envelope(codec: str, body: bytes, tenant: str, ids: ExternalIds, source: str,
                     received_at_us: int, bound: str | None = None) -> Attribution:
    """The envelope of one ChirpStack (`codec="chirpstack"`) or TTS (`"tts"`) event.
    Raises AuthError(403) when a token bound to `bound` sends another device's event."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        doc, error = None, f"invalid JSON at byte {exc.pos}: {exc.msg}"
    else:
        error = None
    if codec == "tts" and isinstance(doc, dict) and "uplink_message" not in doc:
        kinds = sorted(k for k in doc if k not in ("end_device_ids", "correlation_ids",
                                                   "received_at"))
        return Attribution(None, ignored=f"not an uplink ({', '.join(kinds) or 'empty'})")
    device, key = _identity(doc, codec, tenant, ids) if doc is not None else ("", "")
    if bound is not None:
        if device and device != bound:
            raise AuthError(f"this token is bound to device '{bound}' and cannot send as "
                            f"'{device}'", status=403)
        device = bound
    if not device and error is None:
        error = ("the event names no device (deviceInfo.devEui)" if codec == "chirpstack"
                 else "the event names no device (end_device_ids.dev_eui / device_id)")
    msg_id = f"{tenant}/{device or '?'}/{codec}/{key or _digest(body)}"
    return Attribution(Envelope(msg_id, tenant, device, source, codec, body, received_at_us),
                       error=error)
