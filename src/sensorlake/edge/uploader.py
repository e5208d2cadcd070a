"""The edge uploader: outbox -> sensorlake, deleting only what the watermark confirms.

Each `step()`:
1. takes in the newest watermark and deletes the messages at or below it;
2. resends the unconfirmed messages when the watermark has not moved for resend_seconds
   (a broker that crashed lost them, or the ack was lost), and after a restart;
3. seals new messages while fewer than window_messages are unconfirmed: first the *live*
   sets (appended in the last live_seconds), then the backlog, oldest first, at most
   backfill_per_second sets per second, so live readings keep flowing during a backfill;
4. sends them; when sensorlake is unreachable it backs off exponentially with jitter and
   seals nothing new until a retry of the sealed ones succeeds (then live sets go first).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sensorlake.config import EdgeSettings
from sensorlake.edge.outbox import Outbox, Sealed
from sensorlake.edge.transport import Transport, Unreachable
from sensorlake.errors import AuthError

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 30.0


@dataclass
class UploaderStats:
    sent: int = 0
    """Messages sent (resends included)."""
    resent: int = 0
    confirmed_sets: int = 0
    failures: int = 0
    watermark: int = 0
    last_error: str | None = None


class Uploader:
    """Uploads one device's outbox through a transport; call `step()` or `run()`."""

    def __init__(self, outbox: Outbox, device: str, transport: Transport,
                 settings: EdgeSettings | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.outbox = outbox
        self.device = device
        self.transport = transport
        self.settings = settings or EdgeSettings()
        self.clock = clock
        self.stats = UploaderStats()
        self._window: dict[int, Sealed] = {m.seq: m for m in outbox.unconfirmed(device)}
        self._sent: dict[int, float] = {}
        self._progress_at = clock()
        self._tokens = 0.0
        self._last_step: float | None = None
        self._retry_at = 0.0
        self._failures = 0
        status = {s["device"]: s for s in outbox.status()}.get(device)
        self.stats.watermark = status["watermark"] if status else 0
        self._fresh = not status or (status["watermark"] == 0 and status["confirmed"] == 0)
        """Nothing confirmed yet: the server may know this device's seqs from an earlier
        outbox, so send one message at a time until its watermark is known."""

    @property
    def idle(self) -> bool:
        """Nothing unconfirmed and nothing pending for this device."""
        if self._window:
            return False
        return not any(s["device"] == self.device and s["pending"]
                       for s in self.outbox.status())

    def step(self) -> int:
        """One round; returns the number of messages sent."""
        now = self.clock()
        elapsed = 0.0 if self._last_step is None else max(0.0, now - self._last_step)
        self._last_step = now
        rate, per_message = self.settings.backfill_per_second, self.settings.message_readings
        self._tokens = min(self._tokens + rate * elapsed, max(rate, per_message))
        if self._fresh and hasattr(self.transport, "primed"):
            if not self.transport.primed():  # MQTT: the retained watermark comes first
                return 0
            self._fresh = False
        self._confirm(self.transport.watermark(), now)
        if now < self._retry_at:
            return 0
        due = [seq for seq in self._window if seq not in self._sent]
        if self._window and len(due) < len(self._window) and \
                now - self._progress_at >= self.settings.resend_seconds:
            due = list(self._window)  # no progress: the broker may have lost them
            self.stats.resent += len(due)
            self._progress_at = now
        if self._failures and due:  # unreachable so far: probe with what is sealed
            if not self._send(due, now):
                return 0
            due = []
        due += self._seal(now)
        if not due or not self._send(due, now):
            return 0
        return len(due)

    def _send(self, due: list[int], now: float) -> bool:
        try:
            mark = self.transport.send([self._window[seq].body for seq in sorted(due)])
        except (Unreachable, AuthError) as exc:
            self._failed(exc, now)
            return False
        self._failures = 0
        for seq in due:
            self._sent[seq] = now
        self.stats.sent += len(due)
        if self._fresh and mark is not None:
            self._fresh = False
            if getattr(self.transport, "last_duplicates", 0):
                # our first message was taken for a duplicate of an earlier life's seq
                self.outbox.rebase(self.device, mark)
                self._window = {m.seq: m for m in self.outbox.unconfirmed(self.device)}
                self._sent.clear()
                self.stats.watermark = mark
                return True
        self._confirm(mark, now)
        return True

    def _seal(self, now: float) -> list[int]:
        room = (1 if self._fresh else self.settings.window_messages) - len(self._window)
        sealed: list[Sealed] = []
        live_after = now - self.settings.live_seconds
        while room > 0:
            message = self.outbox.seal(self.device, self.settings.message_readings, live_after)
            if message is None:
                break
            sealed.append(message)
            room -= 1
        while room > 0 and self._tokens >= 1:
            message = self.outbox.seal(self.device,
                                       min(self.settings.message_readings, int(self._tokens)))
            if message is None:
                break
            self._tokens -= message.sets
            sealed.append(message)
            room -= 1
        for message in sealed:
            self._window[message.seq] = message
        return [m.seq for m in sealed]

    def _confirm(self, mark: int | None, now: float) -> None:
        if mark is None or mark <= self.stats.watermark:
            return
        highest = max(self._window, default=0)
        self.stats.confirmed_sets += self.outbox.confirm(self.device, mark)
        self.stats.watermark = mark
        self._progress_at = now
        if mark > highest and self._window:  # the outbox moved its messages above `mark`
            self._window = {m.seq: m for m in self.outbox.unconfirmed(self.device)}
            self._sent.clear()
            return
        for seq in [s for s in self._window if s <= mark]:
            del self._window[seq]
            self._sent.pop(seq, None)

    def _failed(self, exc: Exception, now: float) -> None:
        self._failures += 1
        self.stats.failures += 1
        self.stats.last_error = str(exc)
        pause = min(MAX_BACKOFF_SECONDS, 0.25 * 2 ** min(self._failures, 8))
        pause = max(pause * random.uniform(0.5, 1.5), getattr(exc, "retry_after", 0.0))
        self._retry_at = now + pause
        self._sent.clear()  # whatever is in the window goes again once reachable
        level = logging.WARNING if self._failures in (1, 20) or self._failures % 100 == 0 \
            else logging.DEBUG
        log.log(level, "device %s: %s; retrying in %.1f s (the outbox keeps everything)",
                self.device, exc, pause)

    def run(self, stop: threading.Event, interval: float = 0.1,
            wake: threading.Event | None = None) -> None:
        """Step until `stop` is set; `wake` (set by the appender) shortens the pause."""
        while not stop.is_set():
            try:
                self.step()
            except Exception as exc:  # never let the agent die; the outbox keeps everything
                log.exception("device %s: upload step failed", self.device)
                self._failed(exc, self.clock())
            if wake is not None:
                wake.wait(interval)
                wake.clear()
            else:
                stop.wait(interval)
