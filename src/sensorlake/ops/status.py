"""`sensorlake status` and `GET /api/v1/status`: is it healthy, and if not, what to do.

`build_status(runtime, tenant)` extends `Runtime.status()` (whose fields stay as they are)
with rates over the last minute per stage, the ETA to drain the log, quarantine counts by
reason in plain words, the last commit of each sink, disk headroom and hours left at the
current growth, silent devices, firing alerts, the last run of each job, and `problems`:
each says what happened and what to do.
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sensorlake.ops.jobs import load_jobs
from sensorlake.ops.opsdb import OpsDB
from sensorlake.ops.reasons import plain_reasons

STAGE_ORDER = ("decode", "validate", "dedup", "enrich", "aqi", "hot", "quarantine", "lake")
SILENT_LOOKBACK = timedelta(hours=1)
"""Window for a device's usual interval (one aggregate over the last hour of the hot store)."""
CACHE_SECONDS = 15.0
"""The costlier parts (quarantine reasons, silent devices) are recomputed at most this often."""


def cached(kind: str, tenant: str, runtime: Any, compute: Any) -> Any:
    """`compute()`, remembered on the runtime for CACHE_SECONDS per (kind, tenant)."""
    cache = runtime.ops.__dict__.setdefault("status_cache", {})
    hit = cache.get((kind, tenant))
    now = time.monotonic()
    if hit is None or now - hit[0] > CACHE_SECONDS:
        hit = (now, compute())
        cache[(kind, tenant)] = hit
    return hit[1]
GROWTH_WINDOW = 3600.0
MIN_GROWTH_SPAN = 300.0


def problem(severity: str, what: str, do: str) -> dict[str, str]:
    return {"severity": severity, "what": what, "do": do}


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def human_seconds(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} minutes"
    if s < 172800:
        return f"{s / 3600:.1f} hours"
    return f"{s / 86400:.1f} days"


def build_status(runtime: Any, tenant: str, now: datetime | None = None) -> dict[str, Any]:
    """The whole status document for `tenant` (pipeline figures are process-wide)."""
    now = now or datetime.now(UTC)
    out = runtime.status(tenant)
    ops = runtime.ops
    counters = ops.counters()
    rates, covered = ops.current_rates(counters)
    problems: list[dict[str, str]] = []
    out["healthy"] = True
    out["rates"] = {
        "window_seconds": round(covered, 1),
        "ingest_messages_per_second": round(rates["log_appended"], 2),
        "messages_per_second": round(rates["messages"], 2),
        "readings_per_second": round(rates["readings"], 2),
        "stored_per_second": round(rates["stored"], 2),
        "rejects_per_second": round(rates["rejects"], 2),
    }
    out["stages"] = _stages(runtime, counters, rates, covered)
    _eta(out, runtime, rates, covered, problems)
    out["sinks"] = {
        "hot": {"last_commit": out["worker"]["last_hot_commit"]
                or _mtime(runtime.settings.path("hot", "readings.duckdb"))},
        "lake": {"last_commit": out["worker"]["last_lake_commit"] or _lake_written(runtime),
                 "acked_offset": out["log"]["acked_offset"]},
        "quarantine": {"rows": out["quarantine"]["count"]},
    }
    out["quarantine"]["top_reasons"] = cached(
        "reasons", tenant, runtime, lambda: plain_reasons(runtime.quarantine, tenant))
    out["disk"] = disk_status(runtime.settings, ops.db)
    out["devices"] = {"silent": cached("silent", tenant, runtime,
                                       lambda: silent_devices(runtime, tenant, now))}
    out["alerts"] = {"firing": firing_alerts(ops.db, tenant)}
    out["jobs"] = job_summary(ops.db, runtime)
    _problems(out, runtime, rates, covered, problems)
    out["problems"] = problems
    out["healthy"] = not problems
    return out


def _mtime(path: Any) -> str | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat()
    except OSError:
        return None


def _lake_written(runtime: Any) -> str | None:
    """When the newest raw/ partition last got a file (after a restart, before a flush);
    None for a lake that is not a local folder (S3)."""
    if not hasattr(runtime.lake, "partition_files"):
        return None
    newest = None
    for _, folder, live in runtime.lake.partition_files("raw"):
        newest = (folder, live)
    if not newest or not newest[1]:
        return None
    return max((_mtime(Path(f.path)) or "" for f in newest[1]), default=None) or None


def _stages(runtime: Any, counters: dict[str, float], rates: dict[str, float],
            covered: float) -> list[dict[str, Any]]:
    stats = runtime.ops.worker_stats()
    names = [s for s in STAGE_ORDER if s in stats.stage_rows]
    names += sorted(set(stats.stage_rows) - set(names))
    rows = []
    for name in names:
        rate = rates.get(f"rows:{name}", 0.0)
        busy = rates.get(f"seconds:{name}", 0.0)
        total_rows = counters.get(f"rows:{name}", 0.0)
        total_s = counters.get(f"seconds:{name}", 0.0)
        rows.append({
            "stage": name,
            "unit": "messages" if name == "decode" else "readings",
            "per_second": round(rate, 2), "busy_percent": round(100 * busy, 1),
            "rows_total": int(total_rows), "seconds_total": round(total_s, 3),
            "capacity_per_second": round(total_rows / total_s, 1) if total_s > 0 else None,
        })
    return rows


def _eta(out: dict[str, Any], runtime: Any, rates: dict[str, float], covered: float,
         problems: list[dict[str, str]]) -> None:
    """ETA to drain at the current net rate, and at the worker's measured capacity."""
    log_ = out["log"]
    to_process = log_["to_process"] if "to_process" in log_ else max(
        0, log_["last_offset"] - out["worker"]["processed_offset"])
    log_["to_process"] = to_process
    net = rates["messages"] - rates["log_appended"]
    log_["drain_rate_per_second"] = round(net, 2)
    log_["eta_seconds"] = round(to_process / net, 1) if to_process and net > 0 else (
        0.0 if not to_process else None)
    stats = runtime.ops.worker_stats()
    busy = sum(stats.stage_seconds.get(s, 0.0) for s in ("decode", "validate", "dedup",
                                                          "enrich", "aqi", "hot"))
    capacity = stats.messages / busy if busy > 0 else None
    log_["capacity_messages_per_second"] = round(capacity, 1) if capacity else None
    log_["eta_at_capacity_seconds"] = round(to_process / capacity, 1) if capacity and \
        to_process else (0.0 if not to_process else None)


def disk_status(settings: Any, db: OpsDB, now: float | None = None) -> dict[str, Any]:
    """Free space of the data folder's disk and hours left at the growth of the last hour."""
    now = time.time() if now is None else now
    usage = shutil.disk_usage(settings.data_dir)
    samples = db.disk_samples(now - GROWTH_WINDOW)
    samples.append((now, usage.free))
    growth = None
    if samples[-1][0] - samples[0][0] >= MIN_GROWTH_SPAN:
        (t0, f0), (t1, f1) = samples[0], samples[-1]
        growth = (f0 - f1) / (t1 - t0) * 3600
    hours_left = usage.free / growth if growth and growth > 0 else None
    return {"path": str(settings.data_dir), "free_bytes": usage.free,
            "total_bytes": usage.total, "growth_bytes_per_hour": None if growth is None
            else round(growth), "hours_left": None if hours_left is None
            else round(hours_left, 1)}


def silent_devices(runtime: Any, tenant: str, now: datetime) -> list[dict[str, Any]]:
    """Devices whose last reading is older than status.silent_factor usual intervals."""
    cfg = runtime.settings.status
    latest = runtime.hot.latest(tenant)
    if latest.num_rows == 0:
        return []
    last: dict[str, datetime] = {}
    for device, ts in zip(latest.column("device_id").to_pylist(),
                          latest.column("ts").to_pylist(), strict=True):
        last[device] = max(ts, last.get(device, ts))
    window = runtime.hot.window_stats(tenant, now - SILENT_LOOKBACK, now + timedelta(hours=1))
    interval: dict[str, float] = {}
    for row in window.to_pylist():
        if row["stamps"] > 1:
            span = (row["last_ts"] - row["first_ts"]).total_seconds() / (row["stamps"] - 1)
            interval[row["device_id"]] = min(interval.get(row["device_id"], span), span)
    silent = []
    for device, seen in sorted(last.items()):
        usual = interval.get(device)
        limit = max(cfg.silent_min_seconds, cfg.silent_factor * usual if usual else 0)
        quiet = (now - seen).total_seconds()
        if quiet > limit:
            silent.append({"device_id": device, "last_reading": seen.isoformat(),
                           "silent_seconds": round(quiet), "usual_interval_seconds":
                           None if usual is None else round(usual, 1)})
    return silent


def firing_alerts(db: OpsDB, tenant: str) -> list[dict[str, Any]]:
    rows = db.execute("SELECT rule, tenant, subject, since, value, message FROM alert_states "
                      "WHERE state = 'firing' AND tenant IN (?, '*') ORDER BY since", (tenant,))
    return [{"rule": r, "tenant": t, "subject": s, "since": datetime.fromtimestamp(
        since, UTC).isoformat(), "value": v, "message": m} for r, t, s, since, v, m in rows]


def job_summary(db: OpsDB, runtime: Any) -> dict[str, Any]:
    last = {}
    for name in sorted(load_jobs()):
        run = db.last_finished(name)
        if run:
            last[name] = {"status": run["status"], "finished_at": datetime.fromtimestamp(
                run["finished_at"], UTC).isoformat() if run["finished_at"] else None,
                "error": run["error"]}
    running = [{"id": r["id"], "job": r["job"], "done": r["done"], "total": r["total"]}
               for r in db.runs(statuses=("running", "queued"), limit=20)]
    return {"scheduler": "running" if runtime.ops.scheduler_alive() else (
        "off" if not runtime.settings.jobs.enabled else "stopped"),
        "running": running, "last": last}


def _problems(out: dict[str, Any], runtime: Any, rates: dict[str, float], covered: float,
              problems: list[dict[str, str]]) -> None:
    cfg = runtime.settings.status
    log_, worker = out["log"], out["worker"]
    server = runtime.settings.profile == "server"
    if not runtime.ops.worker_alive():
        stale = out.get("processes_stale_after_seconds")
        problems.append(problem("error", "the worker is not running, so nothing received is "
                                "being stored" + (f" (no worker process reported in the last "
                                                  f"{stale} s)" if server else ""),
                                "start `sensorlake run worker` (as many as the load needs); "
                                "if it stops again, read its last error" if server else
                                "restart sensorlake (`sensorlake up`); if it "
                                "stops again, run it with -v and read the last error"))
    elif log_["to_process"] and covered >= 30 and rates["messages"] == 0:
        problems.append(problem("error", f"{log_['to_process']:,} envelopes wait in the log "
                                f"and the worker processed none in the last "
                                f"{covered:.0f} s", "look at worker.last_error below; "
                                "restart sensorlake if it is stuck"))
    elif log_["to_process"] and log_["eta_seconds"] is None and covered >= 30:
        problems.append(problem("warning", f"the log grows: {log_['to_process']:,} envelopes "
                                "wait and more arrive than the worker stores",
                                "raise worker.batch_messages, or move to the server profile "
                                "with several workers"))
    if out.get("board_error"):  # server profile: the process board could not be read
        problems.append(problem("warning", out["board_error"], "check that NATS runs "
                                "(jetstream.servers); the other processes' figures are from "
                                "their last readable report"))
    if worker["last_error"]:
        problems.append(problem("warning", f"the worker could not write a store "
                                f"({worker['errors']} times); last: {worker['last_error']}",
                                "check free disk space and file permissions of the data "
                                "folder; it retries by itself"))
    mqtt = out.get("mqtt")
    if mqtt and not mqtt["connected"]:
        problems.append(problem("error", f"MQTT ingest is not connected to {mqtt['broker']}"
                                f": {mqtt['last_error'] or 'connecting'}", "check that the "
                                "broker runs and that mqtt.username/password match its "
                                "password file (`sensorlake mosquitto-config`); it retries "
                                "by itself"))
    elif mqtt and mqtt["last_error"]:
        problems.append(problem("warning", f"MQTT ingest: {mqtt['last_error']}",
                                "the broker redelivers what was not acknowledged; find why "
                                "the log refuses appends (log full, disk)"))
    age = log_["oldest_unacked_age_seconds"]
    if age is not None and age > max(cfg.lag_warn_seconds,
                                      3 * runtime.settings.worker.lake_flush_seconds):
        problems.append(problem("warning", f"the oldest envelope not yet in the lake arrived "
                                f"{human_seconds(age)} ago", "the lake flush is behind or "
                                "failing: see worker.last_error and free disk space"))
    if log_["max_bytes"] and log_["stored_bytes"] > 0.8 * log_["max_bytes"]:
        full = 100 * log_["stored_bytes"] / log_["max_bytes"]
        problems.append(problem("warning", f"the log is {full:.0f}% full; at 100% ingest "
                                "answers 503",
                                "find why the worker is behind, or raise log.max_bytes"))
    _disk_problem(out["disk"], cfg, problems)
    if rates["rejects"] > 0 and out["quarantine"]["top_reasons"]:
        top = out["quarantine"]["top_reasons"][0]
        problems.append(problem("warning", f"{rates['rejects'] * 60:.0f} readings or messages "
                                f"were quarantined in the last minute, mostly {top['what']}",
                                top["do"]))
    silent = out["devices"]["silent"]
    if silent:
        names = ", ".join(f"{d['device_id']} ({human_seconds(d['silent_seconds'])})"
                          for d in silent[:5])
        more = f" and {len(silent) - 5} more" if len(silent) > 5 else ""
        problems.append(problem("warning", f"{len(silent)} device(s) went silent: {names}"
                                f"{more}", "check their power and network; `sensorlake query "
                                "--device ID --metric M --from -24h` shows their last data"))
    for alert in out["alerts"]["firing"]:
        problems.append(problem("warning", f"alert {alert['rule']} is firing for "
                                f"{alert['subject']}: {alert['message']}",
                                "see `GET /api/v1/alerts`; it resolves by itself when the "
                                "condition clears"))
    for name, run in out["jobs"]["last"].items():
        if run["status"] == "failed":
            problems.append(problem("warning", f"the last {name} job failed: {run['error']}",
                                    f"see `sensorlake jobs history --job {name}`; run it "
                                    f"again with `sensorlake jobs run {name}`"))
    if out["jobs"]["scheduler"] == "stopped":
        problems.append(problem("warning", "the scheduler is not running (no retention, "
                                "compaction or alerts)", "start `sensorlake run scheduler` "
                                "(one per deployment)" if server else "restart sensorlake"))


def _disk_problem(disk: dict[str, Any], cfg: Any, problems: list[dict[str, str]]) -> None:
    free, hours = disk["free_bytes"], disk["hours_left"]
    if free >= cfg.disk_min_free_bytes and (hours is None or hours >= cfg.disk_warn_hours):
        return
    when = f", about {hours:.0f} hours at the current rate" if hours is not None else ""
    problems.append(problem("error" if free < cfg.disk_min_free_bytes else "warning",
                            f"the data folder {disk['path']} has {human_bytes(free)} left"
                            f"{when}", "lower hot.retention_days, delete old lake partitions "
                            "you no longer need, or move the data folder to a larger disk "
                            "(docs/operations.md#disk-headroom)"))
