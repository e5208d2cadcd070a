"""Status figures of a server deployment: this process's report for the board, and the
`runtime.status()` document that `ops/status.py: build_status` extends.

The document has the embedded fields (`log`, `worker`, `quarantine`, `mqtt`) computed for
the whole deployment: the stream's state, the workers' consumer (`to_process` = not yet
delivered + delivered but unacknowledged, i.e. not yet committed to PostgreSQL), the workers'
counters summed over the board, and `processes`, one row per process that reported.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sensorlake.ops.prometheus import MQTT_COUNTERS
from sensorlake.server.board import STALE_SECONDS

MQTT_SUMMED = ("received", "stored", "duplicates", "refused", "acked", "retries")


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def process_report(runtime: Any) -> dict[str, Any]:
    """What this process writes to the board every couple of seconds."""
    counters: dict[str, float] = {k: float(v) for k, v in asdict(runtime.counters).items()}
    doc: dict[str, Any] = {"id": runtime.ops.key, "roles": sorted(runtime.roles),
                           "host": socket.gethostname(), "pid": os.getpid(),
                           "started_at": runtime.started_at.isoformat()}
    worker, exporter = runtime.worker, runtime.exporter
    if worker is not None:
        stats = worker.stats
        counters.update({k: float(getattr(stats, k)) for k in
                         ("messages", "readings", "stored", "rejects", "errors")})
        counters.update({f"seconds:{k}": v for k, v in dict(stats.stage_seconds).items()})
        counters.update({f"rows:{k}": float(v) for k, v in dict(stats.stage_rows).items()})
        doc["worker"] = {"last_hot_commit": _iso(stats.last_hot_commit),
                         "last_error": stats.last_error,
                         "waiting_for_store": worker.waiting_since is not None}
    if exporter is not None:
        ex = exporter.stats
        counters["lake_flushes"] = float(ex.spans)
        doc["exporter"] = {"leader": ex.leader, "exported": ex.exported, "rows": ex.rows,
                           "last_export": _iso(ex.last_export)}
    if runtime.mqtt is not None:
        mqtt = runtime.mqtt.status()
        counters.update({f"mqtt:{k}": float(mqtt[k]) for k in MQTT_COUNTERS})
        doc["mqtt"] = mqtt
    if "scheduler" in runtime.roles:
        doc["scheduler"] = {"leader": runtime.ops.leads_scheduler()}
    doc["counters"] = counters
    return doc


def _mqtt_summary(reports: list[dict[str, Any]]) -> dict[str, Any] | None:
    """MQTT ingest over every live ingest process: connected only when all are."""
    mqtt = [r["mqtt"] for r in reports if r["alive"] and r.get("mqtt")]
    if not mqtt:
        return None
    down = [m for m in mqtt if not m["connected"]]
    errors = [f"{m['client_id']}: {m['last_error']}" for m in mqtt if m.get("last_error")]
    out: dict[str, Any] = {"broker": (down or mqtt)[0]["broker"], "connected": not down,
                           "last_error": errors[0] if errors else None,
                           "processes": len(mqtt),
                           "client_ids": sorted(m["client_id"] for m in mqtt)}
    out.update({k: sum(int(m.get(k, 0)) for m in mqtt) for k in MQTT_SUMMED})
    return out


def server_status(runtime: Any, tenant: str | None = None) -> dict[str, Any]:
    """The deployment's figures as `Runtime.status()` has them for one process."""
    ops = runtime.ops
    reports = ops.reports()
    out: dict[str, Any] = {"started_at": runtime.started_at.isoformat(), "profile": "server",
                           "roles": sorted(runtime.roles), "ingest": asdict(runtime.counters)}
    try:
        consumer = ops.board.consumer_state()
    except Exception as exc:  # NATS restarting: figures from the stream only
        consumer, ops.board_error = None, f"the workers' consumer is unreadable: {exc}"
    if runtime.log is not None:
        stats = runtime.log.stats()
        acked = stats.acked.get("lake", 0)
        oldest = stats.oldest_unacked_us
        age = None if oldest is None else round(time.time() - oldest / 1e6, 3)
        to_process = sum(consumer) if consumer is not None else max(
            0, stats.last_offset - max(acked, stats.first_offset - 1))
        out["log"] = {"first_offset": stats.first_offset, "last_offset": stats.last_offset,
                      "acked_offset": acked, "exported_offset": acked,
                      "backlog": max(0, stats.last_offset - acked), "to_process": to_process,
                      "stored_bytes": stats.stored_bytes, "max_bytes": stats.max_bytes,
                      "oldest_unacked_age_seconds": age, "oldest_unexported_age_seconds": age}
    stats_ = ops.worker_stats()
    live = ops.workers(alive_only=True)
    worker = {k: v for k, v in asdict(stats_).items()
              if k not in ("stage_seconds", "stage_rows")}
    worker.update(last_hot_commit=_iso(stats_.last_hot_commit),
                  last_lake_commit=_iso(stats_.last_lake_commit), processes=len(live),
                  waiting_for_store=any((r.get("worker") or {}).get("waiting_for_store")
                                        for r in live),
                  pending=consumer[0] if consumer else None,
                  unacknowledged=consumer[1] if consumer else None)
    if "log" in out:
        worker["processed_offset"] = out["log"]["last_offset"] - out["log"]["to_process"]
    out["worker"] = worker
    leaders = [r["exporter"] for r in reports if r["alive"] and (r.get("exporter") or {}).get(
        "leader")]
    out["lake_export"] = leaders[0] if leaders else None
    out["mqtt"] = _mqtt_summary(reports)
    out["processes"] = [{"roles": r.get("roles"), "host": r.get("host"), "pid": r.get("pid"),
                         "started_at": r.get("started_at"), "last_seen_seconds":
                         r["age_seconds"], "alive": r["alive"]} for r in reports]
    out["processes_stale_after_seconds"] = STALE_SECONDS
    if ops.board_error:
        out["board_error"] = ops.board_error
    if runtime.quarantine is not None:
        out["quarantine"] = {"count": runtime.quarantine.count(tenant)}
    return out
