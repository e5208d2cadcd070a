"""Alerts: rules as data, evaluated on the hot store in batches, states stored in ops.db.

Rules come from `[[alerts.rules]]` (config.AlertRule). Each evaluation (the `alerts` job,
every 30 s by default) turns every rule into conditions, one per subject (a device, or the
pipeline / the disk for system rules), with one SQL aggregate per rule over the window
(`HotStore.window_stats`), never per reading:

- threshold: the window's aggregate (sustained by default: min for `above`, max for
  `below`) is past the threshold, with readings over at least half the window;
- no_data: a device that sent before has sent nothing for `minutes`;
- rate_of_change: last - first value in the window rose by more than `max_rise` or fell by
  more than `max_fall`;
- pipeline_lag: the oldest envelope not yet in the lake is older than `seconds`;
- disk_headroom: free space below `min_free_bytes`, or full within `min_hours`.

A subject becomes *firing* when its condition turns true and *resolved* when it turns false;
only these transitions make an event, so each is notified once (webhook, MQTT, log; see
ops/notify.py), with an id receivers use to drop retries.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sensorlake.config import AlertRule, Settings
from sensorlake.ops.notify import deliver_pending
from sensorlake.ops.opsdb import OpsDB
from sensorlake.timeparse import parse_duration

SYSTEM_KINDS = ("pipeline_lag", "disk_headroom")
SYSTEM_TENANT = "*"


@dataclass
class Condition:
    rule: str
    tenant: str
    subject: str
    active: bool
    value: float | None
    message: str


def rule_tenant(rule: AlertRule, settings: Settings) -> str:
    return SYSTEM_TENANT if rule.kind in SYSTEM_KINDS else rule.tenant or settings.default_tenant


def evaluate(rule: AlertRule, settings: Settings, hot: Any, now: datetime,
             system: dict[str, Any] | None = None) -> list[Condition]:
    """The conditions of one rule at `now` (one aggregate query per rule)."""
    tenant = rule_tenant(rule, settings)
    devices = tuple(rule.devices) or None
    out: list[Condition] = []
    if rule.kind in ("threshold", "rate_of_change"):
        window = parse_duration(rule.window)
        tick = timedelta(microseconds=1)  # the window is (now - window, now]
        stats = hot.window_stats(tenant, now - window + tick, now + tick, (rule.metric,),
                                 devices)
        for row in stats.to_pylist():
            out.append(_window_condition(rule, tenant, row, window))
    elif rule.kind == "no_data":
        latest = hot.latest(tenant, (rule.metric,) if rule.metric else None, devices)
        last: dict[str, datetime] = {}
        for device, ts in zip(latest.column("device_id").to_pylist(),
                              latest.column("ts").to_pylist(), strict=True):
            last[device] = max(ts, last.get(device, ts))
        for device, ts in sorted(last.items()):
            quiet = (now - ts).total_seconds() / 60
            out.append(Condition(rule.name, tenant, device, quiet > (rule.minutes or 0),
                                 round(quiet, 1), f"no {rule.metric or 'reading'} for "
                                 f"{quiet:.0f} minutes (limit {rule.minutes:g})"))
    elif rule.kind == "pipeline_lag":
        age = (system or {}).get("oldest_unacked_age_seconds") or 0.0
        out.append(Condition(rule.name, tenant, "pipeline", age > (rule.seconds or 0), age,
                             f"the oldest envelope not yet in the lake is {age:.0f} s old "
                             f"(limit {rule.seconds:g} s)"))
    elif rule.kind == "disk_headroom":
        disk = (system or {}).get("disk") or {}
        free, hours = disk.get("free_bytes", 0), disk.get("hours_left")
        low = rule.min_free_bytes is not None and free < rule.min_free_bytes
        soon = rule.min_hours is not None and hours is not None and hours < rule.min_hours
        when = f", full in about {hours:.0f} hours" if hours is not None else ""
        out.append(Condition(rule.name, tenant, "disk", low or soon, float(free),
                             f"{free / 1e9:.1f} GB free{when}"))
    return out


def _window_condition(rule: AlertRule, tenant: str, row: dict[str, Any],
                      window: timedelta) -> Condition:
    device = row["device_id"]
    if rule.kind == "threshold":
        agg = rule.agg or ("min" if rule.above is not None else "max")
        value = row[agg]
        covered = (row["last_ts"] - row["first_ts"]) >= window / 2 or rule.agg == "mean"
        past = (rule.above is not None and value > rule.above) or (
            rule.below is not None and value < rule.below)
        limit = f"above {rule.above:g}" if rule.above is not None else f"below {rule.below:g}"
        text = f"{rule.metric} {agg} {value:g} over {rule.window} ({limit})"
        return Condition(rule.name, tenant, device, bool(past and covered), value, text)
    change = row["last"] - row["first"]
    rise = rule.max_rise is not None and change > rule.max_rise
    fall = rule.max_fall is not None and -change > rule.max_fall
    return Condition(rule.name, tenant, device, rise or fall, change,
                     f"{rule.metric} changed by {change:+g} in {rule.window}")


def apply(db: OpsDB, rule: AlertRule, conditions: list[Condition],
          now: float) -> list[tuple[str, str, str, float | None]]:
    """Store states; returns the transitions (subject, state, message) that became events."""
    tenant = conditions[0].tenant if conditions else None
    current = {(t, s): state for t, s, state in db.execute(
        "SELECT tenant, subject, state FROM alert_states WHERE rule = ?", (rule.name,))}
    seen = {(c.tenant, c.subject) for c in conditions}
    statements: list[tuple[str, list[Any]]] = []
    events: list[tuple[str, str, str, float | None]] = []
    for c in conditions:
        state = current.get((c.tenant, c.subject))
        if c.active and state != "firing":
            statements.append(("INSERT OR REPLACE INTO alert_states VALUES (?, ?, ?, 'firing', "
                               "?, ?, ?, ?)", [rule.name, c.tenant, c.subject, now, c.value,
                                               c.message, now]))
            events.append((c.subject, "firing", c.message, c.value))
        elif not c.active and state == "firing":
            statements.append(("UPDATE alert_states SET state = 'resolved', since = ?, "
                               "value = ?, message = ?, updated_at = ? WHERE rule = ? AND "
                               "tenant = ? AND subject = ?", [now, c.value, c.message, now,
                                                              rule.name, c.tenant, c.subject]))
            events.append((c.subject, "resolved", c.message, c.value))
        elif state == "firing":
            statements.append(("UPDATE alert_states SET value = ?, message = ?, updated_at = ? "
                               "WHERE rule = ? AND tenant = ? AND subject = ?",
                               [c.value, c.message, now, rule.name, c.tenant, c.subject]))
    for (t, subject), state in current.items():  # no data at all for it now: resolved
        if state == "firing" and (t, subject) not in seen and (tenant is None or t == tenant):
            text = "no readings in the window any more"
            statements.append(("UPDATE alert_states SET state = 'resolved', since = ?, "
                               "message = ?, updated_at = ? WHERE rule = ? AND tenant = ? AND "
                               "subject = ?", [now, text, now, rule.name, t, subject]))
            events.append((subject, "resolved", text, None))
    for subject, state, message, value in events:
        statements.append(("INSERT INTO alert_events (rule, tenant, subject, state, at, value, "
                           "message) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           [rule.name, tenant or SYSTEM_TENANT, subject, state, now, value,
                            message]))
    if statements:
        db.transaction(statements)
    return events


def evaluate_all(settings: Settings, hot: Any, db: OpsDB, now: datetime | None = None,
                 system: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate every rule, store the transitions, send pending notifications."""
    now = now or datetime.now(UTC)
    firing = resolved = 0
    for rule in settings.alerts.rules:
        events = apply(db, rule, evaluate(rule, settings, hot, now, system), now.timestamp())
        firing += sum(1 for e in events if e[1] == "firing")
        resolved += sum(1 for e in events if e[1] == "resolved")
    delivered = deliver_pending(db, settings)
    return {"rules": len(settings.alerts.rules), "fired": firing, "resolved": resolved,
            "notifications": delivered}


def evaluate_runtime(runtime: Any, db: OpsDB) -> dict[str, Any]:
    from sensorlake.ops.status import disk_status
    stats = runtime.log.stats()
    oldest = stats.oldest_unacked_us
    system = {"oldest_unacked_age_seconds": None if oldest is None
              else time.time() - oldest / 1e6,
              "disk": disk_status(runtime.settings, db)}
    return evaluate_all(runtime.settings, runtime.hot, db, system=system)


def alert_listing(runtime: Any, tenant: str, limit: int = 50) -> dict[str, Any]:
    """Rules of the tenant (and the system rules), their states and recent events."""
    settings = runtime.settings
    rules = [r for r in settings.alerts.rules if rule_tenant(r, settings) in (tenant,
                                                                              SYSTEM_TENANT)]
    db = runtime.ops.db
    states = [{"rule": r, "subject": s, "state": st, "since": _iso(since), "value": v,
               "message": m} for r, s, st, since, v, m in db.execute(
        "SELECT rule, subject, state, since, value, message FROM alert_states WHERE tenant IN "
        "(?, '*') ORDER BY state, rule, subject", (tenant,))]
    events = [{"id": i, "rule": r, "subject": s, "state": st, "at": _iso(at), "value": v,
               "message": m} for i, r, s, st, at, v, m in db.execute(
        "SELECT id, rule, subject, state, at, value, message FROM alert_events WHERE tenant "
        "IN (?, '*') ORDER BY id DESC LIMIT ?", (tenant, limit))]
    return {"rules": [r.model_dump() for r in rules], "states": states, "events": events}


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")
