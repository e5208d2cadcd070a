"""The durable log: raw envelopes between ingest and the workers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sensorlake.log.base import AppendResult, Envelope, Log, LogBatch, LogStats, Span
from sensorlake.log.memory import MemoryLog
from sensorlake.log.sqlite import SQLiteLog

if TYPE_CHECKING:
    from sensorlake.config import Settings

__all__ = [
    "AppendResult", "Envelope", "Log", "LogBatch", "LogStats", "MemoryLog", "SQLiteLog", "Span",
    "open_log",
]


def open_log(settings: Settings) -> Log:
    """The log of `settings.data_dir` (`log/log.db`), sized by the [log] settings."""
    return SQLiteLog(settings.path("log", "log.db"), max_bytes=settings.log.max_bytes,
                     keep_acked_seconds=settings.log.keep_acked_seconds,
                     group_commit_max=settings.log.group_commit_max)
