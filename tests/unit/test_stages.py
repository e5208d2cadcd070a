"""validate, dedup and enrich: table in, table out."""

from __future__ import annotations

import math

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from sensorlake.decode import decode
from sensorlake.model import Quality
from sensorlake.process.base import CALIBRATION_SCHEMA, DEVICE_SCHEMA, Context
from sensorlake.process.dedup import DedupStage
from sensorlake.process.enrich import EnrichStage
from sensorlake.process.validate import ValidateStage

TS = "2026-11-23T07:00:00Z"


def _ctx(settings, devices=(("t1", "d", 52.0, 5.0),), calibrations=()):
    return Context(
        settings,
        pa.Table.from_pylist([{"tenant": t, "device_id": d, "static_lat": la, "static_lon": lo,
                               "static_alt": None} for t, d, la, lo in devices],
                             schema=DEVICE_SCHEMA),
        pa.Table.from_pylist([{"tenant": t, "device_id": d, "metric": m, "scale": s,
                               "offset": o} for t, d, m, s, o in calibrations],
                             schema=CALIBRATION_SCHEMA))


def test_validate_rejects_with_reasons_and_keeps_the_rest(settings, make_entries):
    batch = decode(make_entries({"device": "d", "ts": TS, "readings": {
        "pm2_5": 12, "humidity": 140, "foo": 1, "temperature": "NaN"}}))
    out = ValidateStage().process(batch, _ctx(settings))
    assert out.readings.column("metric").to_pylist() == ["pm2_5"]
    reasons = " | ".join(out.rejects.column("reason").to_pylist())
    assert "d: humidity=140.0 is outside the valid range [0.0, 100.0] %" in reasons
    assert "unknown metric 'foo'" in reasons
    assert "temperature=NaN is not a finite number" in reasons


def test_validate_rejects_impossible_timestamps(settings, make_entries):
    batch = decode(make_entries(
        {"device": "d", "ts": "1999-12-31T23:59:59Z", "readings": {"pm2_5": 1}},
        {"device": "d", "ts": "2999-01-01T00:00:00Z", "readings": {"pm2_5": 1}}))
    out = ValidateStage().process(batch, _ctx(settings))
    assert out.readings.num_rows == 0
    reasons = out.rejects.column("reason").to_pylist()
    assert "before 2000-01-01" in reasons[0] and "in the future" in reasons[1]


def test_extra_metrics_from_settings_are_accepted(tmp_path, make_entries):
    from sensorlake.config import load_settings
    settings = load_settings(data_dir=tmp_path, metrics={"noise": {"unit": "dB", "minimum": 0,
                                                                   "maximum": 200}})
    batch = decode(make_entries({"device": "d", "ts": TS, "readings": {"noise": 55}}))
    assert ValidateStage().process(batch, _ctx(settings)).readings.num_rows == 1


def test_dedup_keeps_first_occurrence(settings, make_entries):
    message = {"device": "d", "ts": TS, "readings": {"pm2_5": 1}}
    batch = decode(make_entries(message, {**message, "readings": {"pm2_5": 2}}, message))
    out = DedupStage().process(batch, _ctx(settings))
    assert out.readings.column("value").to_pylist() == [1.0]
    assert out.rejects.num_rows == 0


def test_enrich_location_calibration_precision_and_unknown_devices(settings, make_entries):
    batch = decode(make_entries(
        {"device": "d", "ts": TS, "readings": {"pm2_5": 10.04, "temperature": 20.123}},
        {"device": "stranger", "ts": TS, "readings": {"pm2_5": 3}}))
    ctx = _ctx(settings, calibrations=[("t1", "d", "pm2_5", 1.1, -0.5)])
    out = EnrichStage().process(batch, ctx)
    rows = {r["metric"]: r for r in out.readings.to_pylist()}
    assert rows["pm2_5"]["value"] == 10.5  # 10.04 * 1.1 - 0.5 = 10.544 -> 0.1 precision
    assert rows["pm2_5"]["quality"] & Quality.CALIBRATED
    assert rows["temperature"]["value"] == 20.12 and rows["temperature"]["quality"] == 0
    assert rows["pm2_5"]["lat"] == 52.0 and rows["pm2_5"]["lon"] == 5.0
    assert out.rejects.num_rows == 1
    assert "device 'stranger' is not registered in tenant 't1'" in out.rejects.column(
        "reason")[0].as_py()


def test_enrich_keeps_gps_fix_over_static_location(settings, make_entries):
    batch = decode(make_entries({"device": "d", "ts": TS, "readings": {
        "pm2_5": 1, "latitude": 51.5, "longitude": 4.5}}))
    out = EnrichStage().process(batch, _ctx(settings))
    assert set(out.readings.column("lat").to_pylist()) == {51.5}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(
    st.sampled_from(["pm2_5", "humidity", "unknown_x"]),
    st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(
        [0.0, 100.0, 100.0000001, -0.0, 2000.0, 2000.1])),
    st.sampled_from([-10**9, -1, 0, 1, 10**9])), min_size=1, max_size=20),
    st.booleans())
def test_validate_keeps_or_rejects_every_row_with_a_reason(rows, accept_unknown) -> None:
    """Property: each reading is either kept (and passes every check) or rejected with a
    reason, never both, never lost."""
    from datetime import UTC, datetime, timedelta

    from sensorlake.config import load_settings
    from sensorlake.process.base import WORKING_SCHEMA, Batch

    settings_ = load_settings(validation={"unknown_metrics": "accept" if accept_unknown
                                          else "reject"})
    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    edges = {-10**9: settings_.validation.earliest - timedelta(microseconds=1),
             -1: settings_.validation.earliest, 0: now,
             1: now + timedelta(seconds=settings_.validation.future_seconds),
             10**9: now + timedelta(days=1)}
    table = pa.Table.from_pylist([
        {"tenant": "t1", "device_id": "d", "metric": m, "ts": edges[ts], "value": v,
         "quality": 0, "received_at": now, "lat": None, "lon": None, "msg_id": f"m{i}"}
        for i, (m, v, ts) in enumerate(rows)], schema=WORKING_SCHEMA)
    ctx = Context(settings_, now=now)
    out = ValidateStage().process(Batch(table), ctx)
    assert out.readings.num_rows + out.rejects.num_rows == table.num_rows
    assert all(out.rejects.column("reason").to_pylist())
    for row in out.readings.to_pylist():
        assert math.isfinite(row["value"])
        assert edges[-1] <= row["ts"] <= edges[1]
        if row["metric"] == "humidity":
            assert 0 <= row["value"] <= 100
        assert accept_unknown or row["metric"] != "unknown_x"
