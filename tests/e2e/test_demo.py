"""`sensorlake demo` and the CLI, as a user runs them: the console script in a subprocess.

Invariants: a demo run leaves queryable readings in the hot store and the Parquet lake (raw
envelopes and readings); a second run on the same folder continues the devices' sequence
numbers and adds rows without duplicating any reading; every command documents itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
import yaml
from e2e_support import cli_env, free_port, run_cli
from typer.testing import CliRunner

from sensorlake.cli import app

DEMO_ENV = {"SENSORLAKE_WORKER__LAKE_FLUSH_SECONDS": "2"}


def run_demo(data_dir: Path, seconds: int) -> str:
    result = run_cli("demo", "--devices", "5", "--seconds", seconds, "--data-dir", data_dir,
                     "--port", free_port(), timeout=90, env=cli_env(**DEMO_ENV))
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    return result.stdout


def hot_stats(data_dir: Path) -> dict:
    """Counts from the hot store, opened read-only (the demo has exited)."""
    with duckdb.connect(str(data_dir / "hot" / "readings.duckdb"), read_only=True) as db:
        rows, distinct, devices = db.execute(
            "select count(*), count(distinct (tenant, device_id, metric, ts)), "
            "count(distinct device_id) from readings").fetchone()
        metrics = {m for (m,) in db.execute("select distinct metric from readings").fetchall()}
    return {"rows": rows, "distinct": distinct, "devices": devices, "metrics": metrics}


def raw_seqs(data_dir: Path) -> dict[str, list[int]]:
    """device -> the seqs of every raw envelope in the lake, sorted (repeats kept)."""
    glob = data_dir / "lake" / "raw" / "**" / "*.parquet"
    rows = duckdb.connect().execute(
        f"select device_id, seq from read_parquet('{glob}', hive_partitioning=true) "
        "order by device_id, seq").fetchall()
    out: dict[str, list[int]] = {}
    for device, seq in rows:
        out.setdefault(device, []).append(seq)
    return out


@pytest.mark.slow
def test_demo_stores_queries_and_continues(tmp_path: Path) -> None:
    """Two demo runs on one folder: readings land in DuckDB and the lake, `sensorlake query`
    reads them back, the second run continues every device's seq without duplicates."""
    data = tmp_path / "demo-data"
    output = run_demo(data, 6)
    assert "slk_" in output
    assert "sensorlake query" in output

    lake = data / "lake"
    assert list(lake.glob("readings/date=*/hour=*/part-*.parquet"))
    assert list(lake.glob("raw/date=*/hour=*/part-*.parquet"))
    first = hot_stats(data)
    assert first["devices"] == 5
    assert {"pm2_5", "pm10", "temperature", "humidity", "pressure", "aqi_us",
            "aqi_uk"} <= first["metrics"]
    assert first["rows"] == first["distinct"] > 0

    query = run_cli("query", "--data-dir", data, "--device", "aq-0001", "--metric", "pm2_5",
                    "--from", "-10m", "--format", "json")
    assert query.returncode == 0, query.stderr
    rows = json.loads(query.stdout)
    assert rows and all(r["metric"] == "pm2_5" and r["value"] > 0 for r in rows)
    seqs_before = raw_seqs(data)

    run_demo(data, 3)
    second = hot_stats(data)
    assert second["rows"] > first["rows"]
    assert second["rows"] == second["distinct"], "a reading was stored twice"
    seqs_after = raw_seqs(data)
    assert set(seqs_after) == {f"aq-{i:04d}" for i in range(1, 6)}
    for device, seqs in seqs_after.items():
        # every envelope once, seqs contiguous from 1: the second run picked up where the
        # first stopped instead of starting over (which the log would drop as duplicates)
        assert seqs == list(range(1, len(seqs) + 1)), device
        assert len(seqs) > len(seqs_before[device]), device


def test_top_level_help_runs_from_the_console_script() -> None:
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    for command in ("devices", "tokens", "query", "quarantine", "config", "up", "demo"):
        assert command in result.stdout


@pytest.mark.parametrize("command", [
    "devices add", "devices list", "devices import", "tokens create", "tokens list",
    "tokens revoke", "query", "quarantine list", "config show", "up", "demo",
])
def test_every_command_has_help(command: str) -> None:
    """`--help` of every sub-command exits 0 and shows usage (in-process: same click app)."""
    result = CliRunner().invoke(app, [*command.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_devices_import_and_list_round_trip(tmp_path: Path) -> None:
    """Devices imported from YAML come back from `devices list --format json` unchanged."""
    data = tmp_path / "data"
    devices = [
        {"id": "station-1", "name": "Balcony", "lat": 52.09, "lon": 5.12,
         "tags": {"floor": "3", "network": "home"},
         "calibration": {"pm2_5": {"scale": 1.1, "offset": -0.5}}},
        {"id": "bike-7", "type": "air_quality", "tags": {"mobile": "true"}},
    ]
    path = tmp_path / "devices.yaml"
    path.write_text(yaml.safe_dump({"devices": devices}))

    imported = run_cli("devices", "import", path, "--data-dir", data)
    assert imported.returncode == 0, imported.stderr
    assert "imported 2 devices" in imported.stdout

    listed = run_cli("devices", "list", "--data-dir", data, "--format", "json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["id"]: r for r in json.loads(listed.stdout)}
    assert set(rows) == {"station-1", "bike-7"}
    station, bike = rows["station-1"], rows["bike-7"]
    assert (station["tenant"], station["name"], station["lat"], station["lon"]) == (
        "default", "Balcony", 52.09, 5.12)
    assert station["tags"] == {"floor": "3", "network": "home"}
    assert station["calibration"] == {"pm2_5": {"scale": 1.1, "offset": -0.5}}
    assert (bike["type"], bike["lat"], bike["tags"], bike["calibration"]) == (
        "air_quality", None, {"mobile": "true"}, None)
