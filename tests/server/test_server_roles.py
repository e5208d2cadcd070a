"""The server roles as real processes: `sensorlake run worker`, `run api` and two `run
scheduler` (one holds the lease); `sensorlake status` and `sensorlake jobs run` from the
command line see the whole deployment, and the api's /metrics counts the worker's work."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx
import orjson
from stack import SENSORLAKE, Plan, stack

from server_support import NATS_URL
from services import require_service


def cli(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SENSORLAKE, *args, "--config", str(config)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})


def test_roles_as_processes_report_to_one_status(tmp_path: Path) -> None:
    require_service("NATS", 4222)
    plan = Plan(devices=2, messages=5, per_message=2)
    with stack(tmp_path, [NATS_URL]) as s:
        token = s.prepare(plan)
        s.spawn("worker")
        s.spawn("api")
        schedulers = [s.spawn("scheduler"), s.spawn("scheduler")]
        s.wait_http()
        bodies, expected = plan.bodies()
        s.send(token, bodies, rate=200)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            doc = orjson.loads(cli("status", "-f", "json", config=s.config).stdout or b"{}")
            if doc.get("worker", {}).get("messages") == len(bodies) and \
                    doc["jobs"]["scheduler"] == "running":
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"status never showed the work: {doc}\n" + "\n".join(
                p.output() for p in s.procs))
        roles = sorted(tuple(p["roles"]) for p in doc["processes"] if p["alive"])
        assert roles == [("api", "ingest"), ("scheduler",), ("scheduler",), ("worker",)]
        assert not [p for p in doc["problems"] if p["severity"] == "error"], doc["problems"]

        run = cli("jobs", "run", "alerts", config=s.config)
        assert run.returncode == 0 and "alerts" in run.stdout and "succeeded" in run.stdout, \
            run.stdout + run.stderr
        metrics = httpx.get(f"{s.url}/metrics", timeout=10).text
        assert f"sensorlake_worker_messages_total {float(len(bodies))}" in metrics
        assert 'sensorlake_job_runs_total{job="alerts",status="succeeded"}' in metrics
        s.assert_exact(expected)
        assert all(p.stop(timeout=30) == 0 for p in schedulers)
