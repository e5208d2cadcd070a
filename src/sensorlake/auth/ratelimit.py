"""Per-token rate limits: a token bucket per token (or per address for anonymous callers)."""

from __future__ import annotations

import math
import threading
import time


class RateLimiter:
    """`check(key, per_minute)` spends one request; None when allowed, else the seconds to
    wait (the `Retry-After`). Buckets hold `burst` requests and refill at `per_minute`."""

    MAX_KEYS = 50_000

    def __init__(self, burst_seconds: float = 10.0) -> None:
        self.burst_seconds = burst_seconds
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, key: str, per_minute: int, burst: int | None = None) -> float | None:
        if per_minute <= 0:
            return None
        rate = per_minute / 60.0
        capacity = float(burst) if burst else max(1.0, rate * self.burst_seconds)
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(key, (capacity, now))
            tokens = min(capacity, tokens + (now - at) * rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return None
            self._buckets[key] = (tokens, now)
            if len(self._buckets) > self.MAX_KEYS:
                self._buckets.clear()
            return max(1.0, math.ceil((1.0 - tokens) / rate))
