"""/metrics serves every documented series; the ops commands work on a data folder."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import orjson
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from conftest import drain, envelope
from sensorlake.api.app import create_app
from sensorlake.cli import app
from sensorlake.ops.prometheus import SERIES
from sensorlake.runtime import Runtime

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def test_metrics_exposes_every_series(make_runtime: Callable[..., Runtime]) -> None:
    rt = make_runtime()
    rt.log.append([envelope("aq-1", 1, {"pm2_5": 3.0}), envelope("aq-1", 2, {"humidity": 140})])
    drain(rt)
    text = TestClient(create_app(rt)).get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert set(SERIES) <= {n if n in SERIES else n + "_total" for n in families} | set(
        families)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}
    assert samples[("sensorlake_worker_messages_total", ())] == 2
    assert samples[("sensorlake_worker_rejects_total", ())] == 1
    assert samples[("sensorlake_log_backlog_messages", ())] == 0
    assert samples[("sensorlake_stage_rows_total", (("stage", "decode"),))] == 2
    assert samples[("sensorlake_quarantine_rows", ())] == 1


def test_every_series_is_documented() -> None:
    doc = DOC.read_text(encoding="utf-8")
    missing = [name for name in SERIES if not re.search(rf"`{name}(_total)?`", doc)]
    assert not missing, f"docs/operations.md does not document {missing}"


def test_cli_status_jobs_and_replay_on_a_stopped_data_folder(
        make_runtime: Callable[..., Runtime]) -> None:
    rt = make_runtime()
    rt.log.append([envelope("aq-1", i, {"pm2_5": 3.0 + i}) for i in range(1, 6)])
    drain(rt)
    data_dir = str(rt.settings.data_dir)
    rt.close()
    runner = CliRunner()
    status = runner.invoke(app, ["status", "--data-dir", data_dir, "-f", "json"])
    assert status.exit_code == 1, status.output  # not running is an error, with what to do
    doc = orjson.loads(status.stdout)
    assert doc["problems"][0]["do"].startswith("start it: `sensorlake up")
    assert doc["log"]["last_offset"] == 5 and doc["log"]["backlog"] == 0
    table = runner.invoke(app, ["status", "--data-dir", data_dir])
    assert "sensorlake is not running" in table.output
    run = runner.invoke(app, ["jobs", "run", "retention", "--data-dir", data_dir])
    assert run.exit_code == 0 and "retention" in run.output and "succeeded" in run.output
    replay = runner.invoke(app, ["replay", "--from", "-1h", "--data-dir", data_dir])
    assert replay.exit_code == 0, replay.output
    history = runner.invoke(app, ["jobs", "history", "--data-dir", data_dir, "-f", "json"])
    runs = orjson.loads(history.stdout)
    assert [r["job"] for r in runs] == ["replay", "retention"]
    assert runs[0]["result"]["envelopes"] == 5
    listing = runner.invoke(app, ["jobs", "list", "--data-dir", data_dir, "-f", "csv"])
    assert "compact-lake,every 1h" in listing.stdout
    unknown = runner.invoke(app, ["jobs", "run", "nope", "--data-dir", data_dir])
    assert unknown.exit_code == 1 and "jobs: alerts" in unknown.output
