"""The error hierarchy. Every sensorlake error names what failed, where, and what to do next.

    SensorlakeError
    ├── ConfigError                 a setting is missing or invalid (fix the config)
    ├── NotFound                    a device, token or file does not exist
    ├── AuthError                   a request lacks a valid credential or the right to act
    ├── QueryTimeout                a query ran past its time limit (narrow it, or bucket it)
    ├── InputError        terminal  bad bytes or values: quarantine, never retry
    │   └── DecodeError             bytes that a codec cannot turn into readings
    └── TransientError    transient retry later, never acknowledge
        ├── Backpressure            the log is full: answer 503 + Retry-After, withhold PUBACK
        └── SinkUnavailable         a store cannot be written now: keep the batch unacknowledged
"""

from __future__ import annotations


class SensorlakeError(Exception):
    """Base of every error raised by sensorlake."""


class ConfigError(SensorlakeError):
    """A setting is missing or invalid."""


class NotFound(SensorlakeError):
    """A named object does not exist."""


class AuthError(SensorlakeError):
    """Missing, invalid or insufficient credentials."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


class QueryTimeout(SensorlakeError):
    """A read query was cancelled at its time limit."""


class InputError(SensorlakeError):
    """Terminal: the input itself is wrong. Quarantine it with this message; never retry."""


class MessageTooLarge(InputError):
    """One envelope is over the log's per-message limit (NATS max_payload): HTTP 413."""


class DecodeError(InputError):
    """Bytes a codec cannot decode. `where` names the device, field or byte offset."""

    def __init__(self, message: str, where: str = "") -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.where = where


class TransientError(SensorlakeError):
    """Transient: retry later and do not acknowledge upstream."""


class Backpressure(TransientError):
    """The log refuses appends until consumers catch up (never deletes to make room)."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SinkUnavailable(TransientError):
    """A sink cannot commit now; the batch stays unacknowledged and is retried."""
