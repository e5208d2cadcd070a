"""ETL import of a client's CSV (and Excel) file: the good rows are stored through the normal
pipeline, the bad ones reported with their line numbers and quarantined; importing the same
file again stores nothing new."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from openpyxl import Workbook

from conftest import drain
from sensorlake.errors import InputError
from sensorlake.ops.scheduler import run_now
from sensorlake.runtime import Runtime
from sensorlake.store.base import ReadingQuery

CSV = """station,time,PM2.5,Temp (F)
aq-1,2026-11-20 10:00,12.5,68
aq-1,2026-11-20 10:05,13.5,69
aq-2,2026-11-20 10:00,abc,70
aq-2,31/11/2026 10:00,5,70
aq-7,2026-11-20 10:00,5,70
,2026-11-20 10:00,5,70
aq-1,2026-11-20 10:10,-4,70
aq-2,2026-11-20 10:10,7,
"""
MAPPING = """device: station
ts: time
timezone: Europe/Amsterdam
metrics:
  PM2.5: pm2_5
  "Temp (F)": {metric: temperature, unit: degF}
"""
DAY = (datetime(2026, 11, 20, tzinfo=UTC), datetime(2026, 11, 21, tzinfo=UTC))


def stored(rt: Runtime, device: str, metric: str) -> list[tuple[str, float]]:
    q = ReadingQuery("default", (metric,), *DAY, device_ids=(device,))
    return [(r["ts"].strftime("%H:%M"), r["value"]) for r in rt.hot.readings(q).to_pylist()]


def files(tmp_path: Path) -> tuple[Path, Path]:
    data, mapping = tmp_path / "client.csv", tmp_path / "mapping.yaml"
    data.write_text(CSV)
    mapping.write_text(MAPPING)
    return data, mapping


def test_csv_with_bad_rows_stores_the_good_and_reports_the_bad_by_line(
        make_runtime: Callable[..., Runtime], tmp_path: Path) -> None:
    rt = make_runtime()
    data, mapping = files(tmp_path)
    params = {"path": str(data), "mapping": str(mapping)}
    run = run_now(rt, rt.ops.db, "import", params)
    assert run["status"] == "succeeded", run["error"]
    drain(rt)
    # 10:00 in Amsterdam in November is 09:00 UTC; 68 °F = 20 °C
    assert stored(rt, "aq-1", "pm2_5") == [("09:00", 12.5), ("09:05", 13.5)]
    assert stored(rt, "aq-1", "temperature") == [("09:00", 20.0), ("09:05", 20.56),
                                                 ("09:10", 21.11)]
    assert stored(rt, "aq-2", "pm2_5") == [("09:10", 7.0)]
    assert stored(rt, "aq-2", "temperature") == [("09:00", 21.11)]
    errors = run["result"]["errors"]
    assert errors == [
        "client.csv line 4: column 'PM2.5' value 'abc' is not a number",
        "client.csv line 5: column 'time' value '31/11/2026 10:00' is not a time in ISO 8601 "
        "(2026-11-23 14:00:00) or epoch milliseconds; set ts_format otherwise (or it does "
        "not exist in Europe/Amsterdam)",
        "client.csv line 6: device 'aq-7' is not registered in tenant 'default': add it with "
        "`sensorlake devices add aq-7 --tenant default`",
        "client.csv line 7: column 'station' is empty; every row needs a device id",
        "client.csv line 8: aq-1: pm2_5=-4.0 is outside the valid range [0.0, 2000.0] µg/m³",
    ]
    assert (run["rows_done"], run["rows_rejected"]) == (5, 5)
    quarantined = rt.quarantine.list("default").to_pylist()
    assert {q["stage"] for q in quarantined} == {"etl"}
    line4 = next(q for q in quarantined if "line 4" in q["reason"])
    assert line4["payload"] == b"aq-2,2026-11-20 10:00,abc,70"
    assert line4["source"] == "etl:client.csv"

    before = rt.hot.count()
    again = run_now(rt, rt.ops.db, "import", params)
    assert again["result"]["envelopes_new"] == 0
    assert again["result"]["envelopes_known"] == run["result"]["envelopes_new"]
    drain(rt)
    assert rt.hot.count() == before


def test_excel_with_a_constant_device_and_a_time_format(
        make_runtime: Callable[..., Runtime], tmp_path: Path) -> None:
    rt = make_runtime()
    book = Workbook()
    sheet = book.active
    sheet.title = "readings"
    sheet.append(["when", "co2 ppm"])
    sheet.append(["20/11/2026 10:00", 415])
    sheet.append([datetime(2026, 11, 20, 10, 5), 420])
    sheet.append(["20/11/2026 10:10", "n/a"])
    path = tmp_path / "co2.xlsx"
    book.save(path)
    mapping = tmp_path / "m.yaml"
    mapping.write_text("device_value: aq-2\nts: when\nts_format: '%d/%m/%Y %H:%M'\n"
                       "sheet: readings\nmetrics:\n  co2 ppm: co2\n")
    run = run_now(rt, rt.ops.db, "import", {"path": str(tmp_path), "mapping": str(mapping)})
    assert run["status"] == "succeeded", run["error"]
    drain(rt)
    assert stored(rt, "aq-2", "co2") == [("10:00", 415.0), ("10:05", 420.0)]
    assert run["result"]["errors"] == [
        "co2.xlsx line 4: column 'co2 ppm' value 'n/a' is not a number"]


def test_mapping_mistakes_are_actionable(make_runtime: Callable[..., Runtime],
                                         tmp_path: Path) -> None:
    rt = make_runtime()
    data, mapping = files(tmp_path)
    mapping.write_text("device: station\nts: timestamp\nmetrics: {PM2.5: pm2_5}\n")
    run = run_now(rt, rt.ops.db, "import", {"path": str(data), "mapping": str(mapping)})
    assert run["status"] == "failed"
    assert "client.csv has no column 'timestamp' (its columns: station, time, PM2.5, " \
        "Temp (F)); fix the mapping file" in run["error"]
    mapping.write_text("ts: time\nmetrics: {PM2.5: pm2_5}\n")
    with pytest.raises(InputError, match="exactly one of `device`"):
        from sensorlake.ops.etl import load_mapping
        load_mapping(mapping)
