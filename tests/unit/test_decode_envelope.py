"""The JSON envelope codec: table in, readings and rejects out."""

from __future__ import annotations

from datetime import UTC, datetime

from sensorlake.decode import decode, get_codec
from sensorlake.errors import ConfigError


def test_single_envelope_becomes_one_row_per_metric(make_entries):
    batch = decode(make_entries({"device": "aq-1", "ts": "2026-11-23T14:00:00Z",
                                 "readings": {"pm2_5": 12.3, "pm10": 20}}))
    rows = batch.readings.to_pylist()
    assert [(r["metric"], r["value"]) for r in rows] == [("pm2_5", 12.3), ("pm10", 20.0)]
    assert rows[0]["ts"] == datetime(2026, 11, 23, 14, tzinfo=UTC)
    assert rows[0]["tenant"] == "t1" and rows[0]["device_id"] == "aq-1"
    assert batch.rejects.num_rows == 0


def test_batch_form_epoch_ms_and_gps(make_entries):
    batch = decode(make_entries({"device": "bike", "batch": [
        {"ts": 1795435200000, "readings": {"pm2_5": 1, "latitude": 52.1, "longitude": 5.1}},
        {"ts": 1795435201000, "readings": {"pm2_5": 2}},
    ]}))
    rows = batch.readings.to_pylist()
    assert len(rows) == 4
    assert rows[0]["lat"] == 52.1 and rows[0]["lon"] == 5.1
    assert rows[3]["lat"] is None
    assert rows[3]["ts"] == datetime(2026, 11, 23, 12, 0, 1, tzinfo=UTC)


def test_missing_ts_uses_received_at(make_entries):
    batch = decode(make_entries({"device": "d", "readings": {"co2": 400}}))
    assert batch.readings.column("ts")[0] == batch.readings.column("received_at")[0]


def test_bad_message_does_not_cost_its_neighbours(make_entries):
    batch = decode(make_entries(
        {"device": "d", "readings": {"pm2_5": 5}},
        b'{"device": "d", "readings": {',
        {"device": "d", "batch": [{"ts": "yesterday", "readings": {"pm2_5": 1}},
                                  {"ts": 1795435200000, "readings": {"pm2_5": "abc",
                                                                     "pm10": "7.5"}}]},
        device="d",
    ))
    assert sorted(batch.readings.column("value").to_pylist()) == [5.0, 7.5]
    reasons = batch.rejects.column("reason").to_pylist()
    assert any("invalid JSON at byte" in r for r in reasons)
    assert any("$.batch[0].ts" in r and "ISO 8601" in r for r in reasons)
    assert any('pm2_5="abc" is not a number' in r for r in reasons)
    assert set(batch.rejects.column("device_id").to_pylist()) == {"d"}


def test_envelope_claiming_another_device_is_rejected(make_entries):
    batch = decode(make_entries({"device": "other", "readings": {"pm2_5": 1}}, device="mine"))
    assert batch.readings.num_rows == 0
    assert "does not match the device 'mine'" in batch.rejects.column("reason")[0].as_py()


def test_unknown_codec_lists_valid_names():
    try:
        get_codec("nope")
    except ConfigError as exc:
        assert "envelope" in str(exc)
    else:
        raise AssertionError("expected ConfigError")
