"""Status numbers against a known workload: a paused worker shows its backlog, a sensible
ETA and a problem that says what to do; the route keeps its original fields."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from conftest import drain, envelope
from sensorlake.api.app import create_app
from sensorlake.auth.tokens import Role
from sensorlake.ops.rates import RateWindow
from sensorlake.ops.status import build_status
from sensorlake.runtime import Runtime


def approx(value: float) -> object:
    return pytest.approx(value, rel=0.05, abs=0.11)  # the figures are rounded to 0.1


def test_a_paused_worker_shows_backlog_and_a_sensible_eta(
        make_runtime: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch) -> None:
    # one step = one batch of 40 (overlapped writes would take all three batches in a step)
    rt = make_runtime(worker={"batch_messages": 40, "overlap_writes": False})
    clock = [1000.0]
    rt.ops.rates = RateWindow(window=60, every=1, clock=lambda: clock[0])
    monkeypatch.setattr(rt, "ready", lambda: True)  # the worker "runs" but does nothing
    rt.log.append([envelope("aq-1", i, {"pm2_5": 10 + i % 7}) for i in range(1, 101)])
    first = build_status(rt, "default")
    assert first["log"]["to_process"] == 100 and first["log"]["backlog"] == 100

    rt.worker.step(wait=0.01)  # one batch of 40, then the worker pauses
    clock[0] += 10
    running = build_status(rt, "default")
    assert running["worker"]["processed_offset"] == 40
    assert running["rates"]["messages_per_second"] == pytest.approx(4.0)
    assert running["log"]["to_process"] == 60
    assert running["log"]["eta_seconds"] == pytest.approx(15.0)  # 60 left at 4 msg/s
    capacity = running["log"]["capacity_messages_per_second"]
    assert capacity > 4  # measured on busy time only
    assert running["log"]["eta_at_capacity_seconds"] == approx(60 / capacity)
    assert {s["stage"] for s in running["stages"]} >= {"decode", "validate", "hot"}

    clock[0] += 60  # a minute without progress
    paused = build_status(rt, "default")
    assert paused["rates"]["messages_per_second"] == 0
    assert paused["log"]["to_process"] == 60 and paused["log"]["eta_seconds"] is None
    assert paused["log"]["eta_at_capacity_seconds"] == approx(60 / capacity)
    assert not paused["healthy"]
    stuck = [p for p in paused["problems"] if "processed none" in p["what"]]
    assert stuck and stuck[0]["severity"] == "error" and "restart" in stuck[0]["do"]

    drain(rt)
    clock[0] += 5
    done = build_status(rt, "default")
    assert done["log"]["to_process"] == 0 and done["log"]["eta_seconds"] == 0
    assert done["log"]["backlog"] == 0  # flushed to the lake and acknowledged
    assert not [p for p in done["problems"] if "log" in p["what"]]


def test_quarantine_reasons_in_plain_words_and_silent_devices(
        make_runtime: Callable[..., Runtime]) -> None:
    rt = make_runtime(status={"silent_min_seconds": 60})
    rt.log.append([envelope("aq-1", 1, {"humidity": 140}), envelope("aq-9", 1, {"pm2_5": 3}),
                   envelope("aq-2", 1, {"pm2_5": 5}, ts="2026-01-01T00:00:00Z"),
                   envelope("aq-2", 2, {"pm2_5": 5}, ts="2026-01-01T00:01:00Z")])
    drain(rt)
    doc = build_status(rt, "default")
    kinds = {r["what"]: r["count"] for r in doc["quarantine"]["top_reasons"]}
    assert kinds == {"values outside the metric's valid range": 1,
                     "readings from devices that are not registered": 1}
    silent = {d["device_id"] for d in doc["devices"]["silent"]}
    assert silent == {"aq-2"}


def test_status_route_keeps_its_fields_and_adds_the_new_ones(
        make_runtime: Callable[..., Runtime]) -> None:
    rt = make_runtime()
    token, _ = rt.tokens.create(Role.OWNER, "default")
    client = TestClient(create_app(rt))
    doc = client.get("/api/v1/status", headers={"Authorization": f"Bearer {token}"}).json()
    for key in ("started_at", "log", "worker", "ingest", "quarantine"):
        assert key in doc
    assert {"last_offset", "acked_offset", "backlog", "stored_bytes", "max_bytes",
            "oldest_unacked_age_seconds"} <= set(doc["log"])
    assert {"processed_offset", "messages", "last_error"} <= set(doc["worker"])
    assert doc["quarantine"]["count"] == 0
    for key in ("rates", "stages", "sinks", "disk", "devices", "alerts", "jobs", "problems"):
        assert key in doc
    assert any("not running" in p["what"] for p in doc["problems"])  # no worker started
    assert client.get("/readyz").status_code == 503
    assert client.get("/livez").status_code == 200
