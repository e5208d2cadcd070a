"""What the source routes share: reading the credential and appending durably.

`append` is the same durable step as `POST /api/v1/ingest` (the runtime's `LogAppender`, so
the requests of one event-loop turn share a group commit): it returns only after the log
committed (then the caller may answer 2xx), or gives the 503 reply to send instead.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sensorlake.errors import AuthError, Backpressure, MessageTooLarge, TransientError
from sensorlake.ingest.http import Reply
from sensorlake.log.base import AppendResult, Envelope

if TYPE_CHECKING:
    from sensorlake.runtime import Runtime

MISSING = ("missing credentials: send 'Authorization: Bearer <token>' (or 'Token <token>', "
           "or basic auth with the token as password); create one with `sensorlake tokens "
           "create`")


def bearer_or_basic(authorization: str | None) -> str:
    """The token of `Bearer <t>`, `Token <t>` (InfluxDB) or `Basic` auth (its password)."""
    scheme, _, value = (authorization or "").strip().partition(" ")
    value = value.strip()
    if scheme.lower() in ("bearer", "token") and value:
        return value
    if scheme.lower() == "basic" and value:
        try:
            _, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise AuthError("malformed basic auth header") from None
        if password:
            return password
    raise AuthError(MISSING)


async def append(runtime: Runtime, envelopes: Sequence[Envelope]
                 ) -> Reply | AppendResult:
    """Append and wait until durable; a 503 Reply under backpressure or a failed commit."""
    if not envelopes:
        runtime.counters.http_requests += 1
        return AppendResult()
    try:
        result = await runtime.appender.append(envelopes)
    except MessageTooLarge as exc:
        return Reply(413, {"detail": str(exc)})
    except Backpressure as exc:
        retry = max(runtime.settings.http.retry_after_seconds, round(exc.retry_after))
        return Reply(503, {"detail": str(exc)}, {"Retry-After": str(retry)})
    except TransientError as exc:
        return Reply(503, {"detail": f"could not store the request, retry: {exc}"},
                     {"Retry-After": "1"})
    runtime.counters.http_requests += 1
    runtime.counters.http_envelopes += result.accepted
    return result
