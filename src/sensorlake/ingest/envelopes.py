"""Turning a request body into log envelopes: JSON envelope(s), one object or NDJSON lines.

Only what authorization needs is read: the `device` each envelope claims (it must be the
token's device when the token is bound to one), `seq` for the watermark, and whether it
carries timestamps (then its message id is a hash of its bytes, so a retried request is a
no-op in the log; without `ts` or `seq` every request is a new message).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field

import orjson

from sensorlake.auth.tokens import Principal
from sensorlake.errors import AuthError
from sensorlake.log.base import Envelope
from sensorlake.registry import is_valid_device_id

CODEC = "envelope"


@dataclass
class Parsed:
    """Envelopes ready to append, plus the lines that could not even be attributed."""

    envelopes: list[Envelope] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    """{"line": n, "error": text} for each unusable line (it still goes to quarantine)."""


def message_id(tenant: str, device: str, doc: dict, raw: bytes) -> str:
    seq = doc.get("seq")
    if isinstance(seq, int) and not isinstance(seq, bool) and seq > 0:
        return f"{tenant}/{device}/seq/{seq}"
    if "ts" in doc or "batch" in doc:
        return f"{tenant}/{device}/sha/{hashlib.blake2b(raw, digest_size=16).hexdigest()}"
    return f"{tenant}/{device}/uuid/{uuid.uuid4().hex}"


def parse_body(body: bytes, principal: Principal, received_at_us: int,
               source: str = "http") -> Parsed:
    """Split `body` into envelopes. Raises AuthError when a message claims another device."""
    parsed = Parsed()
    stripped = body.strip()
    if not stripped:
        return parsed
    docs: list[tuple[int, bytes, object, str | None]] = []
    try:
        docs.append((1, stripped, orjson.loads(stripped), None))
    except orjson.JSONDecodeError as whole_error:
        lines = [(n, line.strip()) for n, line in enumerate(stripped.split(b"\n"), start=1)]
        lines = [(n, line) for n, line in lines if line]
        if len(lines) == 1:
            docs.append((1, stripped, None, f"invalid JSON at byte {whole_error.pos}: "
                         f"{whole_error.msg}"))
        else:
            for number, line in lines:
                try:
                    docs.append((number, line, orjson.loads(line), None))
                except orjson.JSONDecodeError as exc:
                    docs.append((number, line, None, f"line {number}: invalid JSON at byte "
                                 f"{exc.pos}: {exc.msg}"))
    for number, raw, doc, error in docs:
        if error is not None or not isinstance(doc, dict):
            _unusable(parsed, principal, raw, received_at_us, source, number,
                      error or f"line {number}: an envelope must be a JSON object")
            continue
        device = doc.get("device", principal.device_id)
        if not isinstance(device, str) or not is_valid_device_id(device):
            _unusable(parsed, principal, raw, received_at_us, source, number,
                      f"line {number}: an envelope needs \"device\": \"<id>\" (letters, "
                      "digits, ._:- up to 128)")
            continue
        if principal.device_id is not None and device != principal.device_id:
            raise AuthError(f"this token is bound to device '{principal.device_id}' and cannot "
                            f"send as '{device}'", status=403)
        seq = doc.get("seq")
        parsed.envelopes.append(Envelope(
            msg_id=message_id(principal.tenant, device, doc, raw), tenant=principal.tenant,
            device_id=device, source=source, codec=CODEC, payload=raw,
            received_at_us=received_at_us,
            seq=seq if isinstance(seq, int) and not isinstance(seq, bool) and seq > 0 else None,
        ))
    return parsed


def _unusable(parsed: Parsed, principal: Principal, raw: bytes, received_at_us: int,
              source: str, line: int, error: str) -> None:
    """Keep bytes we cannot attribute: they go through the log to the quarantine."""
    parsed.errors.append({"line": line, "error": error})
    parsed.envelopes.append(Envelope(
        msg_id=f"{principal.tenant}/?/uuid/{uuid.uuid4().hex}", tenant=principal.tenant,
        device_id=principal.device_id or "", source=source, codec=CODEC, payload=raw,
        received_at_us=received_at_us))
