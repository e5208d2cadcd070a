"""A lean HTTP/1.1 load generator for the benchmarks: keep-alive connections on loopback,
pre-built requests, a minimal response parser, retry on 503 / 429.

The server and the load share this machine's cores, so the client must cost as little CPU
as possible per request: a general-purpose client (aiohttp, httpx) spends more CPU per
request than the server does, and the benchmark would then measure the client. Run it in its
own process (`run_load`) so it does not share the server's or the caller's GIL.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass


@dataclass
class LoadResult:
    requests: int = 0
    retries: int = 0
    seconds: float = 0.0


def build_request(host: str, port: int, path: str, token: str, body: bytes,
                  content_type: str = "application/json") -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def _connection(host: str, port: int, queue: list[bytes], result: LoadResult,
                      expect: tuple[int, ...]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while queue:
            request = queue.pop()
            while True:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                        break
                if length:
                    await reader.readexactly(length)
                if status in expect:
                    result.requests += 1
                    break
                if status not in (429, 503):
                    raise RuntimeError(f"unexpected HTTP {status}: {head[:200]!r}")
                result.retries += 1
                await asyncio.sleep(0.02)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def post_all(host: str, port: int, requests: list[bytes], connections: int = 32,
                   expect: tuple[int, ...] = (200, 204)) -> LoadResult:
    """Send every pre-built request once (retrying 429/503) over `connections` sockets."""
    loop = asyncio.get_running_loop()
    queue = list(reversed(requests))
    result = LoadResult()
    start = loop.time()
    await asyncio.gather(*(_connection(host, port, queue, result, expect)
                           for _ in range(connections)))
    result.seconds = loop.time() - start
    return result


def run_load(host: str, port: int, requests: list[bytes], connections: int = 32,
             expect: tuple[int, ...] = (200, 204)) -> LoadResult:
    """`post_all` on uvloop when available (the cheapest event loop per request)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        return asyncio.run(post_all(host, port, requests, connections, expect))
    return uvloop.run(post_all(host, port, requests, connections, expect))
