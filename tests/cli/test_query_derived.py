"""`sensorlake query` without a running server serves derived metrics too (computed from
the hot store, as the readings route does)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
from typer.testing import CliRunner

from sensorlake.cli import app
from sensorlake.config import load_settings
from sensorlake.model import READING_SCHEMA
from sensorlake.registry import Device
from sensorlake.runtime import Runtime

runner = CliRunner()


def test_query_energy_delta_offline(tmp_path: Path) -> None:
    data = tmp_path / "data"
    runtime = Runtime(load_settings(data_dir=data, jobs={"enabled": False}))
    runtime.registry.upsert([Device(id="m1", type="energy_meter")])
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=5)
    rows = [{"tenant": "default", "device_id": "m1", "metric": "energy",
             "ts": start + timedelta(minutes=15 * i), "value": 100.0 + 0.5 * i, "quality": 0,
             "received_at": start, "lat": None, "lon": None} for i in range(17)]
    runtime.hot.write(pa.Table.from_pylist(rows, schema=READING_SCHEMA))
    runtime.close()
    result = runner.invoke(app, [
        "query", "--data-dir", str(data), "--device", "m1", "--metric", "energy_delta",
        "--metric", "energy", "--from", (start - timedelta(minutes=1)).isoformat(),
        "--to", (start + timedelta(hours=4, minutes=1)).isoformat(), "--every", "1h",
        "--agg", "sum", "--format", "json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    import orjson
    got = orjson.loads(result.output)
    deltas = [r["value"] for r in got if r["metric"] == "energy_delta"]
    # the first reading has no delta; each hour gets four quarter-hours of 0.5 kWh (a reading
    # on the hour closes the hour before it)
    assert deltas == [None, 2.0, 2.0, 2.0, 2.0]
    assert any(r["metric"] == "energy" for r in got)
    assert "status" in got[0]  # the derived series' extra column
