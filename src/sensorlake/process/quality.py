"""quality: set the flag bits of each reading's `quality`; never change a value or drop a row.

Bits (model.Quality; thresholds in process/quality_rules.py and `[quality]`):

- OUT_OF_RANGE: outside the metric's expected range (narrower than the valid range, which
  validation enforces), or the device's `expected.<metric>` tag.
- STUCK: the N-th (or later) identical consecutive value of a gauge for the same key, once
  the run has lasted stuck_min_seconds (counters, the gauges in STUCK_OFF and values at the
  ends of the valid range are exempt).
- SPIKE: |Δvalue| / max(Δt, spike_min_interval) above the metric's limit, against the
  previous reading of the key.
- GAP: the previous reading of the key is more than gap_factor × cadence earlier.
- CLOCK_SUSPECT: ts more than clock_ahead_seconds after received_at, or more than
  clock_behind_days before it.
- CALIBRATED (enrich) and INTERPOLATED (a codec) pass through untouched.

"Previous reading" spans batches: the stage keeps one row per (tenant, device, metric) key
(last ts and value, the run of identical values and its start; process/quality_state.py),
seeded from the hot store's `latest` table (`Context.previous`) the first time a key is
seen. A reading at or before its key's last ts
(late data, a redelivery) is compared within its own batch only and does not move the state
back. The state advances in `pending` and becomes the base of the next batch; the worker
calls `commit()` after the hot store committed and `rollback()` before processing a batch
again, so a retried batch is flagged exactly as the first attempt.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from sensorlake.model import Quality
from sensorlake.process.base import PREVIOUS_SCHEMA, Batch, Context, PreviousLookup
from sensorlake.process.quality_rules import Rules, build_rules
from sensorlake.process.quality_state import COLUMNS, KeyState, KeyTable, key_hash

if TYPE_CHECKING:
    from sensorlake.config import QualitySettings
    from sensorlake.store.base import HotStore

KEY = ["tenant", "device_id", "metric"]
_COLUMNS = ["tenant", "device_id", "metric", "ts", "value", "quality", "received_at"]


class QualityStage:
    """Flags readings (see the module docstring); keeps the last reading of every key."""

    name = "quality"

    def __init__(self) -> None:
        self._keys = KeyState(max_keys=1_000_000)
        self._rules: Rules | None = None
        self._rules_for: tuple[object, object] = (None, None)
        self._lock = threading.Lock()
        """One batch at a time: a replay job may run the worker's stages beside the worker."""

    @property
    def state(self) -> pl.DataFrame:
        """key, last_ts, last_value, run of every key, as the next batch sees them."""
        with self._lock:
            return self._keys.frame()

    def commit(self) -> None:
        with self._lock:
            self._keys.commit()

    def rollback(self) -> None:
        with self._lock:
            self._keys.rollback()

    def process(self, batch: Batch, ctx: Context) -> Batch:
        readings = batch.readings
        settings = ctx.settings.quality
        if not settings.enabled or readings.num_rows == 0:
            return batch
        with self._lock:
            self._keys.max_keys = settings.max_keys
            return self._process(batch, ctx)

    def _process(self, batch: Batch, ctx: Context) -> Batch:
        readings = batch.readings
        frame = _sorted_frame(readings)
        first = frame["first"].to_numpy()
        keys = frame["key"].to_numpy()[first]  # unique, one per key in the batch
        found, known = self._keys.lookup(keys)
        seeds = _seed(frame.filter(pl.col("first")), found, ctx)
        if len(seeds):
            at, hit = seeds.find(keys)
            found_seed = hit & ~found
            for name in COLUMNS:
                known[name][found_seed] = seeds[name][at[found_seed]]
            found = found | found_seed
        group = np.cumsum(first) - 1  # each row's key, as a position in `keys`
        frame = frame.with_columns(
            pl.Series("known", found[group]),
            *(pl.Series(name, known[name][group]) for name in COLUMNS),
        ).with_columns(pl.when(pl.col("known")).then(pl.col(c)).alias(c) for c in COLUMNS)
        flagged, updates = flag(frame, self._rules_of(ctx), ctx.settings.quality)
        self._keys.stage(seeds.upsert(updates) if len(seeds) else updates)
        quality = np.empty(readings.num_rows, np.int16)
        quality[flagged["_row"].to_numpy()] = flagged["quality"].to_numpy()
        index = readings.schema.get_field_index("quality")
        out = readings.set_column(index, readings.schema.field(index), pa.array(quality))
        return Batch(out, batch.rejects)

    def _rules_of(self, ctx: Context) -> Rules:
        """Thresholds, rebuilt only when the settings or the registry snapshot change."""
        settings, tags = self._rules_for
        if self._rules is None or settings is not ctx.settings or tags is not ctx.device_tags:
            marker = (ctx.settings, ctx.device_tags)
            self._rules, self._rules_for = build_rules(ctx.settings, ctx.device_tags), marker
        return self._rules


def _sorted_frame(readings: pa.Table) -> pl.DataFrame:
    """The columns the stage needs (ts and received_at in µs), `key` (the key hash), `_row`
    (position in the batch), sorted by key and ts, with `first` marking each key's first
    row. Sorting two integer columns is much cheaper than sorting three string columns."""
    frame = pl.from_arrow(readings.select(_COLUMNS))
    assert isinstance(frame, pl.DataFrame)
    key = key_hash(frame)
    ts = pc.cast(readings.column("ts"), pa.int64()).to_numpy()
    order = np.lexsort((ts, key))
    sorted_key = key[order]
    first = np.empty(len(order), bool)
    first[0] = True
    first[1:] = sorted_key[1:] != sorted_key[:-1]
    return frame[order].with_columns(
        pl.col("ts").dt.epoch("us"), pl.col("received_at").dt.epoch("us"),
        pl.Series("key", sorted_key), pl.Series("_row", order), pl.Series("first", first))


def flag(frame: pl.DataFrame, rules: Rules,
         q: QualitySettings) -> tuple[pl.DataFrame, KeyTable]:
    """(_row, quality) of every reading, and the new state of the keys that advanced.

    `frame` is sorted by key and ts: _row, first, key, tenant, device_id, metric, ts and
    received_at (µs), value, quality, and the key's state (last_ts, last_value, run; null
    for a key never seen)."""
    frame = frame.join(rules.metrics, on="metric", how="left", maintain_order="left")
    if rules.device_ranges.height:
        frame = frame.join(rules.device_ranges, on=KEY, how="left", maintain_order="left"
                           ).with_columns(pl.coalesce("dev_lo", "lo").alias("lo"),
                                          pl.coalesce("dev_hi", "hi").alias("hi"))
    default_cadence = int(q.cadence_seconds * 1e6)
    if rules.cadences.height:
        frame = frame.join(rules.cadences, on=["tenant", "device_id"], how="left",
                           maintain_order="left")
        cadence = pl.col("cadence_us").fill_null(default_cadence)
    else:
        cadence = pl.lit(default_cadence)
    ts, value, last_ts = pl.col("ts"), pl.col("value"), pl.col("last_ts")
    first = pl.col("first")
    is_new = last_ts.is_null() | (ts > last_ts)
    first_new = is_new & ~(is_new.shift(1).fill_null(False) & ~first)
    use_state = first_new & last_ts.is_not_null()
    frame = frame.with_columns(is_new=is_new, use_state=use_state)
    frame = frame.with_columns(
        prev_ts=pl.when("use_state").then("last_ts").when(~pl.col("first"))
        .then(ts.shift(1)),
        prev_value=pl.when("use_state").then("last_value").when(~pl.col("first"))
        .then(value.shift(1)),
    )
    same = (value == pl.col("prev_value")).fill_null(False)
    boundary = pl.col("first") | first_new | ~same
    position = pl.int_range(pl.len(), dtype=pl.Int64)
    continues = pl.col("use_state") & same  # the run the state ends with goes on
    frame = frame.with_columns(
        run=position - pl.when(boundary).then(position).forward_fill() + 1
        + pl.when(boundary).then(pl.when(continues).then("run").otherwise(0)).forward_fill(),
        run_start=pl.when(boundary).then(pl.when(continues).then("run_start").otherwise(ts))
        .forward_fill())
    dt = ts - pl.col("prev_ts")
    min_dt = int(q.spike_min_interval_seconds * 1e6)
    rate = (value - pl.col("prev_value")).abs() / pl.max_horizontal(dt, pl.lit(min_dt))
    ahead = int(q.clock_ahead_seconds * 1e6)
    behind = int(q.clock_behind_days * 86400e6)
    received = pl.col("received_at")
    stuck_us = int(q.stuck_min_seconds * 1e6)
    bits = (
        _bit((value < pl.col("lo")) | (value > pl.col("hi")), Quality.OUT_OF_RANGE)
        | _bit((pl.col("run") >= pl.col("stuck_n")) & (ts - pl.col("run_start") >= stuck_us)
               & (value > pl.col("floor")) & (value < pl.col("ceiling")), Quality.STUCK)
        | _bit(rate > pl.col("spike_per_us"), Quality.SPIKE)
        | _bit(dt > cadence * q.gap_factor, Quality.GAP)
        | _bit((ts - received > ahead) | (received - ts > behind), Quality.CLOCK_SUSPECT)
    )
    frame = frame.with_columns((pl.col("quality").cast(pl.Int32) | bits).cast(pl.Int16)
                               .alias("quality"))
    last = pl.col("first").shift(-1).fill_null(True)
    advanced = frame.filter(last & pl.col("is_new"))
    updates = KeyTable.of(advanced["key"].to_numpy(), last_ts=advanced["ts"].to_numpy(),
                          last_value=advanced["value"].to_numpy(),
                          run=advanced["run"].to_numpy(),
                          run_start=advanced["run_start"].to_numpy())
    return frame.select("_row", "quality"), updates


def _bit(condition: pl.Expr, bit: int) -> pl.Expr:
    return pl.when(condition.fill_null(False)).then(pl.lit(bit, pl.Int32)).otherwise(
        pl.lit(0, pl.Int32))


def _seed(firsts: pl.DataFrame, found: np.ndarray, ctx: Context) -> KeyTable:
    """The hot store's latest reading of the batch's keys the stage does not know (`firsts`:
    one row per key of the batch, in key order; `found`: which are known)."""
    if ctx.previous is None or found.all():
        return KeyTable.empty()
    unseen = firsts.filter(pl.Series(~found)).select(KEY)
    rows = ctx.previous(unseen.to_arrow())
    if rows.num_rows == 0:
        return KeyTable.empty()
    latest = pl.from_arrow(rows.select(PREVIOUS_SCHEMA.names))
    assert isinstance(latest, pl.DataFrame)
    latest = latest.join(unseen, on=KEY, how="semi").unique(KEY, keep="first")
    ts = latest["ts"].dt.epoch("us").to_numpy()
    return KeyTable.of(key_hash(latest), last_ts=ts,
                       last_value=latest["value"].cast(pl.Float64).to_numpy(),
                       run=np.ones(latest.height, np.int64), run_start=ts)


def previous_from(hot: HotStore) -> PreviousLookup:
    """A `Context.previous` over a hot store's `latest(tenant, metrics, device_ids)`."""

    def lookup(keys: pa.Table) -> pa.Table:
        parts = []
        for tenant in pc.unique(keys.column("tenant")).to_pylist():
            mine = keys.filter(pc.equal(keys.column("tenant"), tenant))
            devices = tuple(pc.unique(mine.column("device_id")).to_pylist())
            metrics = tuple(pc.unique(mine.column("metric")).to_pylist())
            latest = hot.latest(tenant, metrics, devices)
            parts.append(pa.table({
                "tenant": pa.repeat(tenant, latest.num_rows).cast(pa.string()),
                "device_id": latest.column("device_id"), "metric": latest.column("metric"),
                "ts": latest.column("ts"), "value": latest.column("value"),
            }).cast(PREVIOUS_SCHEMA))
        return pa.concat_tables(parts) if parts else PREVIOUS_SCHEMA.empty_table()

    return lookup
