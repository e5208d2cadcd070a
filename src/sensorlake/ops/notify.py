"""Alert notifications: webhook (JSON POST), MQTT topic, log; each event once per channel.

Every alert event (a transition to firing or resolved) is stored in ops.db first; this sends
the ones not yet delivered, channel by channel, and records per channel "ok" or the error.
A channel that failed is retried at the next evaluation (up to MAX_ATTEMPTS); one that
succeeded is never sent again, so receivers see each event once. The payload carries `id`
(the event id) and `dedup_key` for receivers that want to drop a retry anyway.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from paho.mqtt import publish

from sensorlake.config import Settings
from sensorlake.ops.opsdb import OpsDB

log = logging.getLogger("sensorlake.alerts")

MAX_ATTEMPTS = 5
WEBHOOK_TIMEOUT = 10.0


def payload(event: dict[str, Any]) -> dict[str, Any]:
    at = datetime.fromtimestamp(event["at"], UTC).isoformat().replace("+00:00", "Z")
    return {"id": event["id"], "dedup_key": f"{event['rule']}/{event['tenant']}/"
            f"{event['subject']}/{event['state']}/{at}", "rule": event["rule"],
            "tenant": event["tenant"], "subject": event["subject"], "state": event["state"],
            "at": at, "value": event["value"], "message": event["message"],
            "text": f"[{event['state'].upper()}] {event['rule']} {event['subject']}: "
                    f"{event['message']}"}


def _send(channel: str, body: dict[str, Any], settings: Settings) -> None:
    cfg = settings.alerts
    if channel == "log":
        (log.warning if body["state"] == "firing" else log.info)("%s", body["text"])
    elif channel == "webhook":
        if not cfg.webhooks:
            raise RuntimeError("no alerts.webhooks configured")
        for url in cfg.webhooks:
            response = httpx.post(url, json=body, timeout=WEBHOOK_TIMEOUT)
            response.raise_for_status()
    elif channel == "mqtt":
        topic = f"{cfg.mqtt_topic_prefix}/{body['tenant']}/{body['rule']}"
        publish.single(topic, orjson.dumps(body), qos=1, hostname=cfg.mqtt_host,
                       port=cfg.mqtt_port, client_id="")
    else:
        raise RuntimeError(f"unknown channel {channel}")


def deliver_pending(db: OpsDB, settings: Settings) -> int:
    """Send every undelivered (event, channel); returns how many were delivered now."""
    rules = {r.name: r for r in settings.alerts.rules}
    rows = db.execute("SELECT id, rule, tenant, subject, state, at, value, message, "
                      "deliveries, attempts FROM alert_events WHERE attempts < ? ORDER BY id",
                      (MAX_ATTEMPTS,))
    sent = 0
    for row in rows:
        event = dict(zip(("id", "rule", "tenant", "subject", "state", "at", "value", "message"),
                         row[:8], strict=True))
        deliveries: dict[str, str] = orjson.loads(row[8])
        rule = rules.get(event["rule"])
        channels = rule.notify if rule else ["log"]
        todo = [c for c in channels if deliveries.get(c) != "ok"]
        if not todo:
            continue
        body = payload(event)
        for channel in todo:
            try:
                _send(channel, body, settings)
                deliveries[channel] = "ok"
                sent += 1
            except Exception as exc:  # any failure: keep it for the next evaluation
                deliveries[channel] = f"error: {exc}"
                log.warning("alert %s: %s notification failed (%s); will retry",
                            event["rule"], channel, exc)
        done = all(deliveries.get(c) == "ok" for c in channels)
        db.execute("UPDATE alert_events SET deliveries = ?, attempts = ? WHERE id = ?",
                   (orjson.dumps(deliveries).decode(), MAX_ATTEMPTS if done else row[9] + 1,
                    event["id"]))
    return sent
