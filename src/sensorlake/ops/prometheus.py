"""The Prometheus exporter (`GET /metrics`): counters and gauges read at scrape time.

Nothing is instrumented per reading: a custom collector reads the counters the pipeline keeps
anyway (WorkerStats, once per batch), the log's stats, the ingest counters, the quarantine,
ops.db (alerts, jobs) and the disk, when Prometheus scrapes. Each registry belongs to one
runtime, so tests and several runtimes in one process never share series.

Every series is listed in SERIES (name, type, help); docs/operations.md documents them all
(tests/ops/test_ops_docs.py checks it).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

SERIES: dict[str, tuple[str, str]] = {
    "sensorlake_up": ("gauge", "1 while the process runs; worker label says if it is alive."),
    "sensorlake_worker_messages": ("counter", "Envelopes the worker processed."),
    "sensorlake_worker_readings": ("counter", "Readings the stages produced."),
    "sensorlake_worker_stored": ("counter", "Readings newly stored in the hot store."),
    "sensorlake_worker_rejects": ("counter", "Readings or messages sent to the quarantine."),
    "sensorlake_worker_errors": ("counter", "Transient store errors (retried)."),
    "sensorlake_lake_flushes": ("counter", "Lake flushes (spans written and acknowledged)."),
    "sensorlake_stage_seconds": ("counter", "Seconds spent per stage (label stage)."),
    "sensorlake_stage_rows": ("counter", "Rows that entered each stage (label stage)."),
    "sensorlake_sink_last_commit_timestamp_seconds": (
        "gauge", "Unix time of the last commit per sink (label sink: hot, lake)."),
    "sensorlake_log_last_offset": ("gauge", "Highest offset appended to the log."),
    "sensorlake_log_acked_offset": ("gauge", "Offset acknowledged by the worker (in the lake)."),
    "sensorlake_log_backlog_messages": ("gauge", "Envelopes not yet in the lake."),
    "sensorlake_log_stored_bytes": ("gauge", "Payload bytes held by the log."),
    "sensorlake_log_max_bytes": ("gauge", "The log's size cap (503 above it)."),
    "sensorlake_log_oldest_unacked_age_seconds": (
        "gauge", "Age of the oldest envelope not yet in the lake (0 when none)."),
    "sensorlake_edge_watermark_devices": (
        "gauge", "Devices whose sequence watermark the log tracks (edge agents)."),
    "sensorlake_ingest": ("counter", "Ingest counters by source and kind (HTTP requests and "
                          "envelopes, MQTT, drops as their modules add them)."),
    "sensorlake_quarantine_rows": ("gauge", "Rows in the quarantine."),
    "sensorlake_alerts_firing": ("gauge", "Alerts firing (label rule)."),
    "sensorlake_job_last_success_timestamp_seconds": (
        "gauge", "Unix time of each job's last successful run (label job)."),
    "sensorlake_job_runs": ("counter", "Finished job runs (labels job, status)."),
    "sensorlake_disk_free_bytes": ("gauge", "Free bytes on the data folder's disk."),
    "sensorlake_disk_total_bytes": ("gauge", "Size of the data folder's disk."),
}


MQTT_COUNTERS = ("connects", "received", "stored", "duplicates", "refused", "acked", "groups",
                 "retries", "watermarks_published")


def _family(name: str, labels: list[str] | None = None) -> Metric:
    kind, text = SERIES[name]
    if kind == "counter":
        return CounterMetricFamily(name, text, labels=labels)
    return GaugeMetricFamily(name, text, labels=labels)


def _value(name: str, value: float) -> Metric:
    family = _family(name)
    family.add_metric([], float(value))
    return family


class RuntimeCollector(Collector):
    """Reads one runtime's figures at scrape time."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        rt = self.runtime
        stats = rt.ops.worker_stats()  # server profile: summed over the process board
        up = _family("sensorlake_up", ["worker"])
        up.add_metric(["alive" if rt.ops.worker_alive() else "stopped"], 1.0)
        yield up
        for field in ("messages", "readings", "stored", "rejects", "errors"):
            yield _value(f"sensorlake_worker_{field}", getattr(stats, field))
        yield _value("sensorlake_lake_flushes", stats.lake_flushes)
        seconds = _family("sensorlake_stage_seconds", ["stage"])
        rows = _family("sensorlake_stage_rows", ["stage"])
        for stage, value in sorted(dict(stats.stage_seconds).items()):
            seconds.add_metric([stage], value)
        for stage, value in sorted(dict(stats.stage_rows).items()):
            rows.add_metric([stage], value)
        yield seconds
        yield rows
        sinks = _family("sensorlake_sink_last_commit_timestamp_seconds", ["sink"])
        for sink, at in (("hot", stats.last_hot_commit), ("lake", stats.last_lake_commit)):
            if at is not None:
                sinks.add_metric([sink], at.timestamp())
        yield sinks
        if rt.log is not None:
            yield from self._log()
        yield from self._ingest()
        if rt.quarantine is not None:
            yield _value("sensorlake_quarantine_rows", rt.quarantine.count())
        yield from self._ops()

    def _log(self) -> Iterator[Metric]:
        rt = self.runtime
        stats = rt.log.stats()
        server = rt.settings.profile == "server"
        acked = stats.acked.get("lake" if server else rt.worker.consumer, 0)
        yield _value("sensorlake_log_last_offset", stats.last_offset)
        yield _value("sensorlake_log_acked_offset", acked)
        yield _value("sensorlake_log_backlog_messages", stats.last_offset - acked)
        yield _value("sensorlake_log_stored_bytes", stats.stored_bytes)
        yield _value("sensorlake_log_max_bytes", stats.max_bytes)
        oldest = stats.oldest_unacked_us
        yield _value("sensorlake_log_oldest_unacked_age_seconds",
                     0.0 if oldest is None else max(0.0, time.time() - oldest / 1e6))
        if not server:  # JetStream keeps watermarks in KV; counting keys is not done here
            seqs = getattr(rt.log, "_seqs", None)
            yield _value("sensorlake_edge_watermark_devices", len(getattr(seqs, "marks", {})))

    def _ingest(self) -> Iterator[Metric]:
        family = _family("sensorlake_ingest", ["source", "kind"])
        summed = getattr(self.runtime.ops, "ingest_counters", None)
        if summed is not None:  # server profile: every ingest process's counters, summed
            for source, kind, value in summed():
                family.add_metric([source, kind], value)
            yield family
            return
        for name, value in sorted(asdict(self.runtime.counters).items()):
            source, _, kind = name.partition("_")
            if isinstance(value, int | float):
                family.add_metric([source, kind or name], float(value))
        mqtt = getattr(self.runtime, "mqtt", None)
        if mqtt is not None:  # MQTT ingest (ingest/mqtt.py): its monotonic counters
            for kind, value in sorted(asdict(mqtt.counters).items()):
                if kind in MQTT_COUNTERS:
                    family.add_metric(["mqtt", kind], float(value))
        yield family

    def _ops(self) -> Iterator[Metric]:
        db = self.runtime.ops.db
        firing = _family("sensorlake_alerts_firing", ["rule"])
        for rule, n in db.execute("SELECT rule, count(*) FROM alert_states WHERE state = "
                                  "'firing' GROUP BY rule ORDER BY rule"):
            firing.add_metric([rule], n)
        yield firing
        success = _family("sensorlake_job_last_success_timestamp_seconds", ["job"])
        runs = _family("sensorlake_job_runs", ["job", "status"])
        for job, status, n, last in db.execute(
                "SELECT job, status, count(*), max(finished_at) FROM runs WHERE status IN "
                "('succeeded', 'failed', 'cancelled') GROUP BY job, status ORDER BY job"):
            runs.add_metric([job, status], n)
            if status == "succeeded" and last:
                success.add_metric([job], last)
        yield success
        yield runs
        import shutil
        usage = shutil.disk_usage(self.runtime.settings.data_dir)
        yield _value("sensorlake_disk_free_bytes", usage.free)
        yield _value("sensorlake_disk_total_bytes", usage.total)


def registry_for(runtime: Any) -> CollectorRegistry:
    """A registry holding only this runtime's collector (created once per runtime)."""
    registry = getattr(runtime, "_prometheus_registry", None)
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(RuntimeCollector(runtime))
        runtime._prometheus_registry = registry
    return registry


def exposition(runtime: Any) -> bytes:
    """The text exposition format of every series."""
    return generate_latest(registry_for(runtime))
