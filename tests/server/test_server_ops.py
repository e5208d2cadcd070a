"""Operations in the server profile, on real NATS and PostgreSQL: status, /metrics, jobs and
alerts routes of the api role cover every process through the process board; one scheduler
of the deployment runs jobs at a time (PostgreSQL lease), and its jobs work on the server
backends (import into JetStream, alerts on PostgreSQL, rollups not applicable, replay on
PostgreSQL and the local lake)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from sensorlake.auth.tokens import Role
from sensorlake.cli import app as cli
from sensorlake.config import Settings, load_settings
from sensorlake.registry import Calibration, Device
from sensorlake.server.runtime import ServerRuntime
from server_support import NATS_URL, PG_DSN, delete_stream, drop_schema, jetstream_settings
from services import require_service, unique_name


@pytest.fixture
def config(tmp_path: Path) -> Iterator[Path]:
    """A server-profile settings file on a stream and schema of its own (removed after)."""
    require_service("NATS", 4222)
    require_service("PostgreSQL", 5432)
    js = jetstream_settings()
    schema = unique_name("slkops").lower()
    path = tmp_path / "sensorlake.toml"
    path.write_text("\n".join([
        'profile = "server"', f'data_dir = "{tmp_path / "data"}"',
        "[jetstream]", f'servers = ["{NATS_URL}"]', f'stream = "{js.stream}"',
        f'subject_prefix = "{js.subject_prefix}"',
        "[postgres]", f'dsn = "{PG_DSN}"', f'schema_name = "{schema}"', "pool_size = 2",
        "[worker]", "poll_seconds = 0.1", "lake_flush_seconds = 0.5",
        "[jobs]", "tick_seconds = 0.2",
        "[jobs.schedules]", 'alerts = "every 1s"', 'retention = "off"',
        'compact-lake = "off"', 'rollups = "off"',
        "[[alerts.rules]]", 'name = "too-warm"', 'kind = "threshold"',
        'metric = "temperature"', "above = 30", 'window = "10m"', 'agg = "mean"',
        'notify = ["log"]', ""]))
    try:
        yield path
    finally:
        drop_schema(schema)
        delete_stream(js)


@contextlib.contextmanager
def running(settings: Settings, roles: set[str]) -> Iterator[ServerRuntime]:
    runtime = ServerRuntime(settings, roles)
    try:
        runtime.start()
        yield runtime
    finally:
        runtime.close()


def wait_for(check: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def envelope(seq: int, value: float = 20.0) -> bytes:
    return orjson.dumps({"device": "st-1", "seq": seq, "ts": 1_795_435_200_000 + seq * 1000,
                         "readings": {"temperature": value, "humidity": 50.0}})


def test_api_role_status_and_metrics_cover_every_process(config: Path) -> None:
    settings = load_settings(config)
    with running(settings, {"worker"}) as worker, running(settings, {"api", "ingest"}) as api:
        api.registry.upsert([Device(id="st-1")])
        owner, _ = api.tokens.create(Role.OWNER, "default", label="test")
        ingest, _ = api.tokens.create(Role.INGEST, "default", label="test")
        client = TestClient(api.app())
        for seq in range(1, 21):
            assert client.post("/api/v1/ingest", content=envelope(seq), headers={
                "Authorization": f"Bearer {ingest}"}).status_code == 200
        headers = {"Authorization": f"Bearer {owner}"}

        def settled() -> dict[str, Any] | None:
            doc = client.get("/api/v1/status", headers=headers).json()
            return doc if doc["worker"]["messages"] == 20 and doc["log"]["to_process"] == 0 \
                else None

        doc = wait_for(settled, "the worker's report of 20 messages")
        assert doc["profile"] == "server" and doc["worker"]["processes"] == 1
        assert doc["worker"]["stored"] == 40 and doc["log"]["last_offset"] == 20
        assert doc["rates"]["messages_per_second"] > 0
        assert {tuple(p["roles"]) for p in doc["processes"]} == {("worker",), ("api", "ingest")}
        assert all(p["alive"] for p in doc["processes"])
        decode = next(s for s in doc["stages"] if s["stage"] == "decode")
        assert decode["rows_total"] == 20
        assert doc["jobs"]["scheduler"] == "stopped"
        assert any("sensorlake run scheduler" in p["do"] for p in doc["problems"])
        assert worker.hot is not None and worker.hot.count() == 40

        metrics = client.get("/metrics").text
        for line in ('sensorlake_up{worker="alive"} 1.0', "sensorlake_worker_messages_total 20.0",
                     'sensorlake_ingest_total{kind="envelopes",source="http"} 20.0',
                     "sensorlake_log_last_offset 20.0", "sensorlake_quarantine_rows 0.0"):
            assert line in metrics, line
        assert "sensorlake_edge_watermark_devices" not in metrics  # not counted in server mode
        ready = client.get("/readyz").json()
        assert ready["checks"]["worker"] and ready["checks"]["log_has_room"]
        assert {j["name"] for j in client.get("/api/v1/jobs", headers=headers).json()[
            "results"]} >= {"retention", "alerts", "import"}
        assert client.get("/api/v1/alerts", headers=headers).json()["rules"][0]["name"] == \
            "too-warm"

        result = CliRunner().invoke(cli, ["status", "-f", "json", "--config", str(config)])
        assert result.exit_code == 0, result.output
        cli_doc = orjson.loads(result.stdout)
        assert cli_doc["worker"]["messages"] == 20 and cli_doc["running"] is True


def test_one_scheduler_runs_jobs_on_the_server_backends(config: Path, tmp_path: Path) -> None:
    settings = load_settings(config)
    csv = tmp_path / "client.csv"
    at = [(datetime.now(UTC) - timedelta(minutes=m)).strftime("%Y-%m-%dT%H:%M:%SZ")
          for m in (3, 2, 1)]  # inside the alert's 10-minute window
    csv.write_text(f"station,at,temp\nst-1,{at[0]},35\nst-1,{at[1]},36\nst-1,{at[2]},abc\n")
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("device: station\nts: at\nmetrics:\n  temp: temperature\n")
    runner = CliRunner()

    def jobs(*args: str) -> Any:
        return runner.invoke(cli, ["jobs", *args, "--config", str(config)])

    with running(settings, {"worker"}) as worker, running(settings, {"scheduler"}) as a, \
            running(settings, {"scheduler"}) as b:
        worker.registry.upsert([Device(id="st-1")])
        wait_for(lambda: a.ops.leads_scheduler() or b.ops.leads_scheduler(), "a leader")
        time.sleep(1)
        assert [a.ops.leads_scheduler(), b.ops.leads_scheduler()].count(True) == 1
        leader, standby = (a, b) if a.ops.leads_scheduler() else (b, a)

        imported = jobs("import", str(csv), "--mapping", str(mapping))
        assert imported.exit_code == 0 and "2 rows done, 1 rejected" in imported.output, \
            imported.output
        assert worker.hot is not None
        wait_for(lambda: worker.hot.count() == 2, "the imported readings in PostgreSQL")
        firing = wait_for(lambda: leader.ops.db.execute(
            "SELECT subject FROM alert_states WHERE rule = 'too-warm' AND state = 'firing'"),
            "the alert evaluated on PostgreSQL", timeout=10)
        assert firing == [("st-1",)]

        rollups = jobs("run", "rollups")
        assert rollups.exit_code == 0, rollups.output
        last = orjson.loads(jobs("history", "--job", "rollups", "-f", "json").stdout)[0]
        assert "not applicable" in last["result"]["skipped"]
        for name in ("retention", "compact-lake"):
            assert jobs("run", name).exit_code == 0, name
        listed = jobs("list", "-f", "json")
        assert {r["job"] for r in orjson.loads(listed.stdout)} >= {"import", "alerts"}

        leader.close()  # the lease goes with its session: the standby takes over
        wait_for(standby.ops.leads_scheduler, "the standby to take the lease", timeout=15)


def test_a_gone_worker_is_reported_and_its_totals_stay(config: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """No fake figures: once the only worker stops reporting, status says the worker is not
    running (error, exit 1), /readyz is 503, and the totals it reported do not drop."""
    from sensorlake.server import board
    settings = load_settings(config)
    with running(settings, {"api", "ingest"}) as api:
        api.registry.upsert([Device(id="st-1")])
        owner, _ = api.tokens.create(Role.OWNER, "default", label="test")
        ingest, _ = api.tokens.create(Role.INGEST, "default", label="test")
        client = TestClient(api.app())
        headers = {"Authorization": f"Bearer {owner}"}
        with running(settings, {"worker"}):
            for seq in range(1, 6):
                assert client.post("/api/v1/ingest", content=envelope(seq), headers={
                    "Authorization": f"Bearer {ingest}"}).status_code == 200
            wait_for(lambda: client.get("/api/v1/status", headers=headers).json()["worker"][
                "messages"] == 5, "the worker's report")
        monkeypatch.setattr(board, "STALE_SECONDS", 2.0)
        time.sleep(3)
        doc = client.get("/api/v1/status", headers=headers).json()
        assert doc["worker"]["processes"] == 0 and doc["worker"]["messages"] == 5
        assert any(p["severity"] == "error" and "no worker process reported" in p["what"]
                   for p in doc["problems"]), doc["problems"]
        assert client.get("/readyz").status_code == 503
        metrics = client.get("/metrics").text
        assert 'sensorlake_up{worker="stopped"} 1.0' in metrics
        assert "sensorlake_worker_messages_total 5.0" in metrics


def test_replay_rebuilds_postgresql_and_the_lake_after_a_calibration_fix(config: Path) -> None:
    """`sensorlake jobs run replay` in the server profile: the scheduler re-derives what the
    exported envelopes stored, PostgreSQL and the lake's readings/ files get the corrected
    values, and a second replay changes nothing."""
    import duckdb
    settings = load_settings(config)
    runner = CliRunner()

    def replay() -> dict[str, Any]:
        out = runner.invoke(cli, ["jobs", "run", "replay", "--param", "from=-1h", "--param",
                                  "to=now", "--config", str(config)])
        assert out.exit_code == 0, out.output
        history = runner.invoke(cli, ["jobs", "history", "--job", "replay", "-f", "json",
                                      "--config", str(config)])
        return orjson.loads(history.stdout)[0]["result"]

    with running(settings, {"worker"}) as worker, running(settings, {"api", "ingest"}) as api, \
            running(settings, {"scheduler"}) as scheduler:
        api.registry.upsert([Device(id="st-1")])
        ingest, _ = api.tokens.create(Role.INGEST, "default", label="test")
        client = TestClient(api.app())
        for seq in range(1, 11):
            assert client.post("/api/v1/ingest", content=envelope(seq, 20.0 + seq), headers={
                "Authorization": f"Bearer {ingest}"}).status_code == 200
        wait_for(lambda: worker.exported_offset() >= 10, "the exporter to write the lake")
        wait_for(scheduler.ops.leads_scheduler, "the scheduler's lease")
        assert worker.hot is not None

        def temperatures() -> tuple[list[float], list[float]]:
            hot = worker.hot.span_readings(1, 10**9)  # type: ignore[union-attr]
            stored = sorted(r["value"] for r in hot.to_pylist() if r["metric"] == "temperature")
            files = scheduler.lake.files("readings")  # type: ignore[union-attr]
            lake = duckdb.sql("SELECT value FROM read_parquet(?) WHERE metric = 'temperature' "
                              "ORDER BY value", params=[files]).fetchall()
            return stored, [v for (v,) in lake]

        assert temperatures() == ([21.0 + k for k in range(10)],) * 2
        api.registry.upsert([Device(id="st-1",
                                    calibration={"temperature": Calibration(offset=0.5)})])
        time.sleep(1.2)  # the scheduler's registry snapshot follows within a second
        first = replay()
        assert first["envelopes"] == 10 and first["lake_partitions_rewritten"] >= 1
        assert temperatures() == ([21.5 + k for k in range(10)],) * 2
        second = replay()
        assert second["lake_partitions_rewritten"] == 0
        assert temperatures() == ([21.5 + k for k in range(10)],) * 2
