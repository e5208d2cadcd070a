"""Operations against a real `sensorlake up`: an ETL import killed with SIGKILL half-way is
marked failed after the restart and, imported again, stores every row exactly once (hot store
and lake); jobs queued from the CLI run in the server's scheduler; `sensorlake status` reads
the running server."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import orjson
import pytest
from e2e_support import Server, run_cli

from sensorlake.ops.opsdb import OpsDB

FILES = 12
ROWS = 1000  # per file, one temperature reading per row (nothing derived)
DEVICES = ("etl-1", "etl-2")


def write_client_files(folder: Path) -> int:
    folder.mkdir()
    start = datetime(2026, 10, 1, tzinfo=UTC)
    n = 0
    for f in range(FILES):
        lines = ["site;stamp;Temp"]
        for _ in range(ROWS):
            at = start + timedelta(minutes=n)
            lines.append(f"{DEVICES[n % 2]};{at:%Y-%m-%d %H:%M};{10 + n % 50}")
            n += 1
        (folder / f"part-{f:02d}.csv").write_text("\n".join(lines).replace(";", ",") + "\n")
    return n


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.slow
def test_import_killed_half_way_then_again_stores_every_row_once(
        make_server: Callable[..., Server], tmp_path: Path) -> None:
    data = tmp_path / "data"
    for device in DEVICES:
        assert run_cli("devices", "add", device, "--data-dir", data).returncode == 0
    rows = write_client_files(tmp_path / "client")
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("device: site\nts: stamp\nmetrics: {Temp: temperature}\n")
    server = make_server(data, SENSORLAKE_ETL__ROWS_PER_ENVELOPE="100")
    server.start()

    queued = run_cli("jobs", "import", tmp_path / "client", "--mapping", mapping, "--no-wait",
                     "--data-dir", data)
    assert queued.returncode == 0, queued.stderr
    db = OpsDB(data / "ops.db")
    wait_for(lambda: any((r["done"] or 0) >= 1 for r in db.runs("import", 1)), 60,
             "the import to be under way")
    server.kill9()
    first = db.runs("import", 1)[0]
    assert first["status"] == "running" and first["done"] < FILES

    server.start()
    wait_for(lambda: db.run(first["id"])["status"] == "failed", 30, "the orphan to be marked")
    assert "interrupted" in db.run(first["id"])["error"]

    status = run_cli("status", "--data-dir", data, "-f", "json")
    doc = orjson.loads(status.stdout)
    assert "rates" in doc and doc["jobs"]["scheduler"] == "running"
    assert any("the last import job failed" in p["what"] for p in doc["problems"])

    again = run_cli("jobs", "import", tmp_path / "client", "--mapping", mapping,
                    "--data-dir", data, timeout=240)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "queued for the running scheduler" in again.stderr
    retention = run_cli("jobs", "run", "retention", "--data-dir", data)
    assert retention.returncode == 0 and "succeeded" in retention.stdout
    wait_for(lambda: orjson.loads(run_cli("status", "--data-dir", data, "-f", "json").stdout)
             ["log"]["to_process"] == 0, 120, "the worker to store the import")
    assert server.stop() == 0
    db.close()

    hot = duckdb.connect(str(data / "hot" / "readings.duckdb"), read_only=True)
    total, distinct = hot.sql("SELECT count(*), count(DISTINCT (device_id, metric, ts)) "
                              "FROM readings").fetchall()[0]
    hot.close()
    assert total == distinct == rows
    lake = duckdb.sql("SELECT count(*), count(DISTINCT (device_id, metric, ts)) FROM "
                      f"read_parquet('{data}/lake/readings/*/*/*.parquet')").fetchall()[0]
    assert lake == (rows, rows)
