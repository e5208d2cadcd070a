"""Properties: flags never change a value or the rows; the stage is deterministic, does not
depend on row order, and cutting a time-ordered stream into batches gives the same flags."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st
from quality_batches import batch

from sensorlake.config import load_settings
from sensorlake.decode import decode
from sensorlake.model import Quality
from sensorlake.process.base import DEVICE_SCHEMA, Context
from sensorlake.process.quality import QualityStage
from sensorlake.process.stages import default_stages

SETTINGS = load_settings(data_dir="/tmp/sensorlake-quality-props",
                         quality={"stuck_count": 3, "stuck_min_seconds": 600})
"""Short runs, so that generated examples reach them."""
CTX = Context(SETTINGS)
METRICS = ["pm2_5", "temperature", "energy", "co2"]

readings = st.lists(
    st.tuples(st.sampled_from(["a", "b"]), st.sampled_from(METRICS),
              st.integers(0, 20_000), st.sampled_from([0.0, 5.0, 5.0, 5.0, 30.0, 900.0, 420.0]),
              st.sampled_from([0, Quality.CALIBRATED]), st.integers(-200, 40 * 86_400)),
    min_size=1, max_size=60, unique_by=lambda r: (r[0], r[1], r[2]))


def _rows(raw):
    # received seconds are an offset from ts
    return [(d, m, t, v, q, t + r) for d, m, t, v, q, r in raw]


@settings(max_examples=150, deadline=None)
@given(readings)
def test_flags_never_change_values_rows_or_other_columns(raw):
    before = batch(_rows(raw))
    after = QualityStage().process(before, CTX)
    assert after.readings.num_rows == before.readings.num_rows
    for name in before.readings.column_names:
        if name != "quality":
            assert after.readings.column(name).equals(before.readings.column(name)), name
    old = before.readings.column("quality").to_pylist()
    new = after.readings.column("quality").to_pylist()
    assert all(n & o == o for o, n in zip(old, new, strict=True))  # bits only added
    assert all(n & ~0x7F == 0 for n in new)


@settings(max_examples=150, deadline=None)
@given(readings, st.randoms(use_true_random=False))
def test_deterministic_and_independent_of_row_order(raw, rng):
    rows = _rows(raw)
    first = QualityStage().process(batch(rows), CTX).readings
    again = QualityStage().process(batch(rows), CTX).readings
    assert first.equals(again)
    shuffled = rows[:]
    rng.shuffle(shuffled)
    out = QualityStage().process(batch(shuffled), CTX).readings
    flags = dict(zip(rows, first.column("quality").to_pylist(), strict=True))
    assert [flags[r] for r in shuffled] == out.column("quality").to_pylist()


@settings(max_examples=150, deadline=None)
@given(readings, st.integers(0, 20_001))
def test_batches_cut_in_time_flag_like_one_batch(raw, cut):
    rows = sorted(_rows(raw), key=lambda r: r[2])
    whole = dict(zip(rows, QualityStage().process(batch(rows), CTX).readings.column(
        "quality").to_pylist(), strict=True))
    stage = QualityStage()
    parts = [[r for r in rows if r[2] < cut], [r for r in rows if r[2] >= cut]]
    got = {}
    for part in parts:
        if part:
            flags = stage.process(batch(part), CTX).readings.column("quality").to_pylist()
            stage.commit()
            got.update(zip(part, flags, strict=True))
    assert got == whole


def test_no_value_changes_through_the_default_stages(settings, make_entries):
    settings.quality.stuck_min_seconds = 0  # a quarter of an hour of minute readings
    entries = make_entries(*[
        {"device": "d", "ts": f"2026-11-23T10:{m:02d}:00Z",
         "readings": {"pm2_5": v, "temperature": 21.0, "energy": 10.5}}
        for m, v in enumerate([5.0, 900.0, 6.0] + [7.0] * 12)])
    ctx = Context(settings, pa.Table.from_pylist(
        [{"tenant": "t1", "device_id": "d", "static_lat": None, "static_lon": None,
          "static_alt": None}], schema=DEVICE_SCHEMA))
    with_quality = decode(entries)
    without = decode(entries)
    for stage in default_stages():
        with_quality = stage.process(with_quality, ctx)
        if stage.name != "quality":
            without = stage.process(without, ctx)
    a, b = with_quality.readings, without.readings
    assert a.num_rows == b.num_rows == 15 * 3 + 15 * 2  # + aqi_us, aqi_uk
    assert a.drop_columns(["quality"]).equals(b.drop_columns(["quality"]))
    flagged = [(m, q) for m, q in zip(a.column("metric").to_pylist(),
                                      a.column("quality").to_pylist(), strict=True) if q]
    spikes = [m for m, q in flagged if q & Quality.SPIKE]
    assert spikes.count("pm2_5") == 2 and spikes.count("aqi_us") == 2  # AQI copies the flags
    assert [m for m, q in flagged if q & Quality.STUCK].count("temperature") == 6
    assert not [m for m, q in flagged if m == "energy"]
