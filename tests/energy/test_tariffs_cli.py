"""`sensorlake tariffs check`: a valid file prints the week's schedule, a bad one the fix."""

from __future__ import annotations

from pathlib import Path

import orjson
from typer.testing import CliRunner

from sensorlake.cli import app

runner = CliRunner()
EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "tariffs.yaml"


def test_check_prints_a_week_of_prices_as_a_table() -> None:
    result = runner.invoke(app, ["tariffs", "check", str(EXAMPLE), "--tariff", "business-tou",
                                 "--week", "2026-01-14", "--tz", "Europe/London"],
                           env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "ok" in result.output and "3 tariff(s)" in result.output
    assert "Mon 12 Jan" in result.output and "Sun 18 Jan" in result.output
    assert "17:00 │ 21:00 │ 0.42" in result.output
    assert "demand charge: 9.5 EUR per peak kW per month (15m average)" in result.output


def test_check_json_schedule_rows_are_periods_and_columns_days() -> None:
    result = runner.invoke(app, ["tariffs", "check", str(EXAMPLE), "--tariff", "business-tou",
                                 "--week", "2026-07-15", "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = orjson.loads(result.output)
    assert [(r["from"], r["to"]) for r in rows] == [
        ("00:00", "07:00"), ("07:00", "09:00"), ("09:00", "17:00"), ("17:00", "21:00"),
        ("21:00", "24:00")]
    assert rows[3]["Wed 15 Jul"] == 0.32 and rows[3]["Sat 18 Jul"] == 0.15  # summer peak


def test_check_resolves_the_tariff_of_a_device() -> None:
    result = runner.invoke(app, ["tariffs", "check", str(EXAMPLE), "--device", "x",
                                 "--tenant", "acme", "--site", "depot-north", "--format",
                                 "json", "--week", "2026-07-15"])
    assert result.exit_code == 0, result.output
    rows = orjson.loads(result.output)
    assert [(r["from"], r["Mon 13 Jul"]) for r in rows] == [
        ("00:00", 0.3), ("00:30", 0.13), ("07:30", 0.3)]  # home-economy7: the site's


def test_check_reports_what_to_fix(tmp_path: Path) -> None:
    bad = tmp_path / "tariffs.yaml"
    bad.write_text("tariffs:\n  tou:\n    currency: GBP\n    price: 0.1\n    periods:\n"
                   "      - {hours: '5pm-9pm', price: 0.3}\n")
    result = runner.invoke(app, ["tariffs", "check", str(bad)], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert "tariff 'tou', field periods[0].hours: '5pm' is not a time of day like 17:00" \
        in result.output
    missing = runner.invoke(app, ["tariffs", "check", str(tmp_path / "none.yaml")],
                            env={"COLUMNS": "300"})
    assert missing.exit_code == 1 and "does not exist" in missing.output


def test_help_explains_the_command() -> None:
    result = runner.invoke(app, ["tariffs", "check", "--help"], env={"COLUMNS": "160"})
    assert result.exit_code == 0
    assert "Validate a tariffs file" in result.output and "--week" in result.output


def test_check_reads_a_registered_devices_site_and_zone(tmp_path: Path) -> None:
    from sensorlake.config import load_settings
    from sensorlake.registry import Device, DeviceRegistry
    from sensorlake.runtime import open_catalog

    data = tmp_path / "data"
    data.mkdir()
    registry = DeviceRegistry(open_catalog(load_settings(data_dir=data)))
    registry.add(Device(id="meter-9", tenant="acme", tags={"site": "depot-north",
                                                          "tz": "Asia/Tokyo"}))
    result = runner.invoke(app, ["tariffs", "check", str(EXAMPLE), "--device", "meter-9",
                                 "--tenant", "acme", "--data-dir", str(data), "--week",
                                 "2026-07-15"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "tariff 'home-economy7'" in result.output and "Asia/Tokyo" in result.output
