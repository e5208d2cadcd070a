"""Rates over the last minute from cumulative counters, sampled a few times a minute.

The pipeline only ever adds to counters (once per batch, `WorkerStats.timed`); this keeps a
short history of snapshots and answers "how much per second over the last minute" as the
difference between now and the oldest snapshot in the window. No per-reading cost.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

Snapshot = dict[str, float]


class RateWindow:
    """Snapshots of named counters; `rates()` per second over `window` seconds."""

    def __init__(self, window: float = 60.0, every: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.every = every
        self._clock = clock
        self._samples: deque[tuple[float, Snapshot]] = deque()
        self._lock = threading.Lock()

    def record(self, values: Snapshot, force: bool = False) -> None:
        now = self._clock()
        with self._lock:
            if not force and self._samples and now - self._samples[-1][0] < self.every:
                return
            self._samples.append((now, dict(values)))
            while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
                self._samples.popleft()

    def rates(self, current: Snapshot) -> tuple[dict[str, float], float]:
        """(per-second rate of each counter over the window, seconds actually covered)."""
        now = self._clock()
        with self._lock:
            base = next(((t, s) for t, s in self._samples if now - t <= self.window), None)
            if base is None and self._samples:
                base = self._samples[-1]
        if base is None or now - base[0] <= 0:
            return {k: 0.0 for k in current}, 0.0
        span = now - base[0]
        return {k: max(0.0, (v - base[1].get(k, 0.0)) / span) for k, v in current.items()}, span
