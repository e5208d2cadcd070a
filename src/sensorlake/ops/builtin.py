"""The built-in jobs, registered exactly like a plugin's (`register_job`).

| job | default schedule | what |
|---|---|---|
| retention | every 1h | readings older than hot.retention_days leave the hot store |
| compact-lake | every 1h | merge the small files of old partitions (ops/compact.py) |
| alerts | every 30s | evaluate the alert rules, store firing/resolved, notify (ops/alerts.py) |
| import | manual | an ETL import of a CSV/Excel file or folder (ops/etl.py) |
| replay | manual | rebuild readings from the lake's raw/ (ops/replay.py) |
| rollups | every 1m | rollup catch-up: recompute the buckets still marked dirty |
| rollups-rebuild | manual | recompute every rollup in the hot horizon (tz/cadence change) |
| sensor-community | manual | one Sensor.Community poll (ingest/pollers/sensor_community.py) |

Pollers (Sensor.Community, weather) register their own jobs the same way from their
modules; add the module to EXTENSIONS so the scheduler imports it.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from sensorlake.ops.jobs import JobContext, register_job

log = logging.getLogger(__name__)

EXTENSIONS: list[str] = ["sensorlake.ingest.pollers.sensor_community"]
"""Modules that call register_job at import (e.g. "sensorlake.ingest.pollers.community")."""


def retention(ctx: JobContext) -> dict[str, Any]:
    """Delete hot-store readings older than hot.retention_days that are already in the lake."""
    from sensorlake.ops.replay import HOT_REWRITE_LOCK
    rt = ctx.runtime
    with HOT_REWRITE_LOCK:
        deleted = rt.hot.apply_retention(done_offset=rt.exported_offset())
    ctx.progress(done=1, total=1, rows_done=deleted)
    return {"deleted": deleted}


def compact_lake(ctx: JobContext) -> dict[str, Any]:
    """Merge small lake files of old partitions into larger ones (never both visible)."""
    from sensorlake.ops.compact import compact
    from sensorlake.store.lake import ParquetLake
    rt = ctx.runtime
    settings = rt.settings.compaction
    if not isinstance(rt.lake, ParquetLake):
        ctx.progress(done=1, total=1, rows_done=0)
        return {"skipped": "not available for an S3 lake: compaction publishes a merged file "
                "with a hard link, which S3 has no equivalent of; its files stay as written"}

    def progress(done: int, total: int, result: Any) -> None:
        ctx.progress(done=done, total=total, rows_done=result.files_in)

    result = compact(rt.lake, rt.exported_offset(), settings.target_bytes,
                     settings.min_age_seconds, progress=progress)
    return result.as_dict()


def alerts(ctx: JobContext) -> dict[str, Any]:
    """Evaluate the alert rules and send notifications for changes."""
    from sensorlake.ops.alerts import evaluate_runtime
    return evaluate_runtime(ctx.runtime, ctx.db)


def etl_import(ctx: JobContext) -> dict[str, Any]:
    """Import a client's CSV or Excel file (or folder) through a mapping file."""
    from sensorlake.ops.etl import run_import
    return run_import(ctx)


def replay(ctx: JobContext) -> dict[str, Any]:
    """Rebuild readings (and what is derived from them) from the lake's raw/ envelopes."""
    from sensorlake.ops.replay import run_replay
    return run_replay(ctx)


def rollup_catch_up(ctx: JobContext) -> dict[str, Any]:
    """Recompute the rollup buckets still marked dirty (the worker does it every
    rollups.refresh_seconds while it runs; this catches up after a stop or a replay)."""
    return _rollups(ctx, rebuild=False)


def rollup_rebuild(ctx: JobContext) -> dict[str, Any]:
    """Recompute every rollup of the hot horizon, e.g. after a device's tz or cadence tag."""
    return _rollups(ctx, rebuild=True)


def _rollups(ctx: JobContext, rebuild: bool) -> dict[str, Any]:
    hot = ctx.runtime.hot
    if ctx.runtime.settings.profile == "server":
        ctx.progress(done=1, total=1, rows_done=0)
        return {"skipped": "not applicable: PostgreSQL keeps no rollups (server profile); "
                "ranges are aggregated from the readings table"}
    if getattr(hot, "rollups", None) is None or not ctx.runtime.settings.rollups.enabled:
        ctx.progress(done=1, total=1, rows_done=0)
        return {"skipped": "this hot store keeps no rollups (rollups.enabled, embedded mode)"}
    if rebuild:
        hot.rebuild_rollups()
    chunk = ctx.runtime.settings.rollups.refresh_max_minutes
    minutes = skipped = 0
    buckets: dict[str, int] = {}
    while True:  # one chunk per transaction, so the worker writes between them
        result = hot.refresh_rollups(max_marks=chunk)
        minutes, skipped = minutes + result.minutes, skipped + result.skipped
        for grain, count in result.rows.items():
            buckets[grain] = buckets.get(grain, 0) + count
        ctx.progress(done=minutes, total=minutes + result.left, rows_done=minutes)
        if not result.left:
            return {"minutes": minutes, "skipped_old_minutes": skipped, "buckets": buckets}


register_job("retention", retention, "every 1h")
register_job("compact-lake", compact_lake, "every 1h")
register_job("alerts", alerts, "every 30s")
register_job("import", etl_import, None)
register_job("replay", replay, None)
register_job("rollups", rollup_catch_up, "every 1m")
register_job("rollups-rebuild", rollup_rebuild, None)

for _module in EXTENSIONS:
    try:
        importlib.import_module(_module)
    except Exception:  # a broken extension must not stop the built-ins
        log.exception("could not load the jobs of %s", _module)
