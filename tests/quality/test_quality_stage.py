"""The quality stage: each flag with exact expectations, state across batches, late data."""

from __future__ import annotations

import pyarrow as pa
import pytest
from quality_batches import DAY, T0, batch, qualities

from sensorlake.config import load_settings
from sensorlake.model import Quality
from sensorlake.process.base import DEVICE_TAG_SCHEMA, PREVIOUS_SCHEMA, Context
from sensorlake.process.quality import QualityStage
from sensorlake.process.stages import default_stages

OOR, STUCK, SPIKE, GAP = Quality.OUT_OF_RANGE, Quality.STUCK, Quality.SPIKE, Quality.GAP
CLOCK, CAL = Quality.CLOCK_SUSPECT, Quality.CALIBRATED


@pytest.fixture
def ctx(settings):
    return Context(settings)


def run(rows, ctx, stage=None):
    stage = stage or QualityStage()
    return qualities(stage.process(batch(rows), ctx)), stage


def test_runs_after_enrich_and_before_aqi():
    names = [s.name for s in default_stages()]
    assert names.index("enrich") < names.index("quality") < names.index("aqi")


def test_out_of_range_uses_the_expected_range_not_the_valid_one(ctx):
    # built-in expected ranges: co2 [300, 10000], temperature [-50, 60]; bounds are inside
    got, _ = run([("d", "co2", 0, 299.0), ("d2", "co2", 0, 300.0), ("d3", "co2", 0, 10000.0),
                  ("d4", "co2", 0, 10001.0), ("d", "temperature", 0, 61.0),
                  ("d5", "temperature", 0, -50.0), ("d", "voltage", 0, 99999.0)], ctx)
    assert got == [OOR, 0, 0, OOR, OOR, 0, 0]


def test_expected_range_from_settings_and_from_a_device_tag(tmp_path):
    settings = load_settings(data_dir=tmp_path, quality={"expected": {
        "voltage": [200, 250], "co2": [float("-inf"), float("inf")]}})
    tags = pa.Table.from_pylist([
        {"tenant": "t1", "device_id": "indoor", "tag": "expected.temperature", "value": "15,30"},
        {"tenant": "t1", "device_id": "bad", "tag": "expected.temperature", "value": "hot"},
    ], schema=DEVICE_TAG_SCHEMA)
    got, _ = run([("d", "voltage", 0, 199.0), ("d", "voltage", 60, 230.0),
                  ("d", "co2", 0, 5.0), ("indoor", "temperature", 0, 31.0),
                  ("outdoor", "temperature", 0, 31.0), ("bad", "temperature", 0, 31.0)],
                 Context(settings, device_tags=tags))
    assert got == [OOR, 0, 0, OOR, 0, 0]


def test_stuck_from_the_tenth_identical_value(ctx):
    # every 5 minutes: the 10th identical value comes 45 minutes (> 30) after the first
    rows = [("d", "temperature", i * 300, 21.5) for i in range(12)]
    rows.append(("d", "temperature", 12 * 300, 21.6))
    got, stage = run(rows, ctx)
    assert got == [0] * 9 + [STUCK, STUCK, STUCK, 0]
    assert stage.state.row(0, named=True)["run"] == 1


def test_stuck_run_continues_across_batches(ctx):
    stage = QualityStage()
    first, _ = run([("d", "humidity", i * 300, 55.0) for i in range(6)], ctx, stage)
    stage.commit()
    second, _ = run([("d", "humidity", (6 + i) * 300, 55.0) for i in range(6)], ctx, stage)
    assert first == [0] * 6
    assert second == [0, 0, 0, STUCK, STUCK, STUCK]  # the 10th identical value overall


def test_counters_and_legitimately_repeating_gauges_are_never_stuck(ctx):
    rows = [(d, m, i * 60, 7.0) for d, m in (("m", "energy"), ("m", "f_cnt"), ("m", "power"),
                                             ("g", "latitude"), ("g", "rssi"))
            for i in range(15)]
    got, _ = run(rows, ctx)
    assert got == [0] * len(rows)


def test_a_run_must_also_last_stuck_min_seconds(ctx):
    # pressure sampled every second repeats for minutes: not stuck until 30 minutes passed
    rows = [("d", "pressure", t, 1013.2) for t in (*range(50), 1799, 1800)]
    got, _ = run(rows, ctx)
    assert got == [0] * 51 + [STUCK]


def test_values_pinned_at_the_end_of_the_valid_range_are_not_stuck(ctx):
    # clean air reads 0.0 µg/m³ for a long time, fog keeps RH at 100 %: physical, not stuck
    rows = [(d, m, t, v) for d, m, v in (("a", "pm2_5", 0.0), ("b", "humidity", 100.0),
                                              ("c", "humidity", 99.9)) for i in range(10)
            for t in [i * 300]]
    got, _ = run(rows, ctx)
    assert got == [0] * 29 + [STUCK]


def test_stuck_count_per_metric_setting(tmp_path):
    settings = load_settings(data_dir=tmp_path, quality={
        "stuck_count": 3, "stuck_counts": {"co2": 0}, "stuck_min_seconds": 0})
    got, _ = run([("d", "pm10", i * 60, 4.0) for i in range(4)]
                 + [("d", "co2", i * 60, 420.0) for i in range(4)], Context(settings))
    assert got == [0, 0, STUCK, STUCK, 0, 0, 0, 0]


def test_spike_is_a_rate_over_at_least_a_minute(ctx):
    # temperature limit 5 °C/min: +6 in one minute is a spike, +6 in two minutes is not;
    # +4 one second later is 4 °C over the one-minute floor: not a spike
    got, _ = run([("a", "temperature", 0, 10.0), ("a", "temperature", 60, 16.0),
                  ("b", "temperature", 0, 10.0), ("b", "temperature", 120, 16.0),
                  ("c", "temperature", 0, 10.0), ("c", "temperature", 1, 14.0),
                  ("c", "temperature", 2, 20.0)], ctx)
    assert got == [0, SPIKE, 0, 0, 0, 0, SPIKE]


def test_spike_both_edges_of_an_outlier_and_against_the_previous_batch(ctx):
    stage = QualityStage()
    run([("d", "pm2_5", 0, 8.0)], ctx, stage)
    stage.commit()
    got, _ = run([("d", "pm2_5", 60, 900.0), ("d", "pm2_5", 120, 9.0)], ctx, stage)
    assert got == [SPIKE, SPIKE]  # the jump and the return (limit 500 µg/m³ per minute)


def test_gap_after_three_cadences_of_silence(ctx):
    # default cadence 600 s, gap_factor 3: silence over 1800 s
    got, _ = run([("d", "pm10", 0, 5.0), ("d", "pm10", 1800, 5.1), ("d", "pm10", 3601, 5.2)],
                 ctx)
    assert got == [0, 0, GAP]


def test_gap_uses_the_device_cadence_tag(ctx):
    tags = pa.Table.from_pylist([
        {"tenant": "t1", "device_id": "fast", "tag": "cadence", "value": "60s"},
        {"tenant": "t1", "device_id": "odd", "tag": "cadence", "value": "often"},
    ], schema=DEVICE_TAG_SCHEMA)
    rows = [(d, "pm10", t, 5.0 + t / 1000) for d in ("fast", "slow", "odd") for t in (0, 181)]
    got, _ = run(rows, Context(ctx.settings, device_tags=tags))
    assert got == [0, GAP, 0, 0, 0, 0]


def test_gap_across_batches_and_first_reading_of_a_key_is_no_gap(ctx):
    stage = QualityStage()
    first, _ = run([("d", "co2", 0, 420.0)], ctx, stage)
    stage.commit()
    second, _ = run([("d", "co2", 7200, 421.0)], ctx, stage)
    assert (first, second) == ([0], [GAP])


def test_clock_suspect_ahead_of_arrival_or_far_in_the_past(ctx):
    got, _ = run([
        ("d", "pm2_5", 0, 1.0, 0, -61),           # stamped 61 s after it arrived
        ("d", "pm2_5", 100, 1.1, 0, 100 - 60),    # 60 s ahead: within the tolerance
        ("e", "pm2_5", 0, 1.0, 0, 31 * DAY),      # arrived 31 days after it was taken
    ], ctx)
    assert got == [CLOCK, 0, CLOCK]


def test_edge_backfill_of_days_is_not_clock_suspect(ctx):
    # an edge agent uploading three days of minute readings after an outage
    rows = [("d", "temperature", i * 60, 20 + (i % 7) / 10, 0, 3 * DAY + 5) for i in range(500)]
    got, _ = run(rows, ctx)
    assert got == [0] * 500


def test_calibrated_and_other_bits_pass_through(ctx):
    got, _ = run([("d", "pm2_5", 0, 5.0, CAL | Quality.INTERPOLATED),
                  ("d", "pm2_5", 60, 900.0, CAL)], ctx)
    assert got == [CAL | Quality.INTERPOLATED, CAL | SPIKE]


def test_late_data_is_compared_within_its_batch_and_does_not_move_the_state(ctx):
    stage = QualityStage()
    run([("d", "temperature", 6000, 20.0)], ctx, stage)
    stage.commit()
    before = stage.state.row(0, named=True)
    # late readings (before ts 6000) that jump: the first has no previous (batch only),
    # the second jumps 10 °C in a minute against the first; the last is new and is
    # compared with the state (20.0 at 6000), not with the late rows
    got, _ = run([("d", "temperature", 0, 30.0), ("d", "temperature", 60, 40.0),
                  ("d", "temperature", 6060, 20.5)], ctx, stage)
    assert got == [0, SPIKE, 0]
    stage.commit()
    assert stage.state.row(0, named=True)["last_ts"] == T0 + 6060 * 1_000_000
    assert before["last_ts"] == T0 + 6000 * 1_000_000
    # only late rows: the state stays where it was
    run([("d", "temperature", 120, 40.0)], ctx, stage)
    assert stage.state.row(0, named=True)["last_ts"] == T0 + 6060 * 1_000_000


def test_rollback_makes_a_retried_batch_flag_the_same(ctx):
    stage = QualityStage()
    run([("d", "pm2_5", 0, 8.0)], ctx, stage)
    stage.commit()
    retried = [("d", "pm2_5", 60, 900.0)]
    first, _ = run(retried, ctx, stage)
    stage.rollback()  # the hot store commit failed: the worker processes the batch again
    second, _ = run(retried, ctx, stage)
    assert first == second == [SPIKE]


def test_state_is_seeded_from_the_hot_store_latest(ctx):
    asked = []

    def previous(keys: pa.Table) -> pa.Table:
        asked.append(sorted(keys.column("device_id").to_pylist()))
        return pa.Table.from_pylist([{"tenant": "t1", "device_id": "old", "metric": "pm10",
                                      "ts": T0, "value": 5.0}], schema=PREVIOUS_SCHEMA.remove(
            3).insert(3, pa.field("ts", pa.int64()))).cast(PREVIOUS_SCHEMA)

    seeded = Context(ctx.settings, previous=previous)
    stage = QualityStage()
    got, _ = run([("old", "pm10", 7200, 5.5), ("new", "pm10", 7200, 5.5)], seeded, stage)
    assert got == [GAP, 0]  # "old" follows its stored reading two hours earlier
    stage.commit()
    run([("old", "pm10", 7260, 5.5), ("new", "pm10", 7260, 5.5)], seeded, stage)
    assert asked == [["new", "old"]]  # a key is looked up once


def test_state_is_bounded(tmp_path):
    settings = load_settings(data_dir=tmp_path, quality={"max_keys": 10})
    stage = QualityStage()
    run([(f"d{i:02d}", "pm10", i, 5.0) for i in range(25)], Context(settings), stage)
    assert stage.state.height == 9  # cut to 90 % of max_keys, newest kept
    assert min(stage.state["last_ts"].to_list()) == T0 + 16 * 1_000_000
    stage.commit()
    run([(f"e{i:02d}", "pm10", 100 + i, 5.0) for i in range(5)], Context(settings), stage)
    stage.commit()
    assert sorted(stage.state["last_ts"].to_list()) == [
        T0 + t * 1_000_000 for t in (*range(21, 25), *range(100, 105))]


def test_disabled_stage_leaves_quality_alone(tmp_path):
    settings = load_settings(data_dir=tmp_path, quality={"enabled": False})
    got, _ = run([("d", "co2", 0, 5.0)], Context(settings))
    assert got == [0]


def test_tenants_do_not_share_state(ctx):
    stage = QualityStage()
    stage.process(batch([("d", "pm2_5", 0, 5.0)], tenant="a"), ctx)
    got = qualities(stage.process(batch([("d", "pm2_5", 60, 900.0)], tenant="b"), ctx))
    assert got == [0]
