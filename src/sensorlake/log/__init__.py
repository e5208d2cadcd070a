"""The durable log: raw envelopes between ingest and the workers."""

from sensorlake.log.base import AppendResult, Envelope, Log, LogBatch, LogStats, Span

__all__ = ["AppendResult", "Envelope", "Log", "LogBatch", "LogStats", "Span"]
