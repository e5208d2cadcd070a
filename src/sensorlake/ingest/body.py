"""Reading a request body within limits, gzip included (a small bomb cannot inflate past it)."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

from sensorlake.errors import InputError


class BodyTooLarge(InputError):
    """Over the configured body limit (HTTP 413)."""


async def read_body(chunks: AsyncIterator[bytes] | bytes, limit: int,
                    content_length: str | None, content_encoding: str | None) -> bytes:
    """The request body, decompressed when `Content-Encoding: gzip`, at most `limit` bytes.
    `chunks` is the body as it arrives, or already whole (the ASGI fast path reads it)."""
    if content_length is not None and content_length.isdigit() and int(content_length) > limit:
        raise BodyTooLarge(f"request body of {content_length} bytes is over the limit of "
                           f"{limit} bytes (http.max_body_bytes): send smaller batches")
    if isinstance(chunks, bytes):
        body = chunks
        if len(body) > limit:
            raise too_large(limit)
    else:
        parts: list[bytes] = []
        size = 0
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            parts.append(chunk)
        body = b"".join(parts)
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise InputError(f"unsupported Content-Encoding '{encoding}': use gzip or none")
    return inflate(body, limit, gzip=encoding != "deflate")


def too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(f"request body is over the limit of {limit} bytes "
                        "(http.max_body_bytes): send smaller batches")


def inflate(data: bytes, limit: int, gzip: bool = True) -> bytes:
    """Decompress, refusing to produce more than `limit` bytes."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS if gzip else zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise InputError(f"body is not valid gzip: {exc}") from exc
    if len(out) > limit or inflater.unconsumed_tail:
        raise BodyTooLarge(f"decompressed body is over the limit of {limit} bytes "
                           "(http.max_body_bytes): send smaller batches")
    return out
