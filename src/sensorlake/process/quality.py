"""quality: set the flag bits of each reading's `quality`; never change a value or drop a row.

Bits (model.Quality; thresholds in process/quality_rules.py and `[quality]`):

- OUT_OF_RANGE: outside the metric's expected range (narrower than the valid range, which
  validation enforces), or the device's `expected.<metric>` tag.
- STUCK: the N-th (or later) identical consecutive value of a gauge for the same key
  (counters and the gauges in STUCK_OFF are exempt).
- SPIKE: |Δvalue| / max(Δt, spike_min_interval) above the metric's limit, against the
  previous reading of the key.
- GAP: the previous reading of the key is more than gap_factor × cadence earlier.
- CLOCK_SUSPECT: ts more than clock_ahead_seconds after received_at, or more than
  clock_behind_days before it.
- CALIBRATED (enrich) and INTERPOLATED (a codec) pass through untouched.

"Previous reading" spans batches: the stage keeps one row per (tenant, device, metric) key
(last_ts, last_value, run) in a polars frame, seeded from the hot store's `latest` table
(`Context.previous`) the first time a key is seen. A reading at or before its key's last ts
(late data, a redelivery) is compared within its own batch only and does not move the state
back. The state advances in `pending` and becomes the base of the next batch; the worker
calls `commit()` after the hot store committed and `rollback()` before processing a batch
again, so a retried batch is flagged exactly as the first attempt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from sensorlake.model import Quality
from sensorlake.process.base import PREVIOUS_SCHEMA, Batch, Context, PreviousLookup
from sensorlake.process.quality_rules import Rules, build_rules

if TYPE_CHECKING:
    from sensorlake.config import QualitySettings
    from sensorlake.store.base import HotStore

KEY = ["tenant", "device_id", "metric"]
STATE_SCHEMA = {"tenant": pl.String, "device_id": pl.String, "metric": pl.String,
                "last_ts": pl.Int64, "last_value": pl.Float64, "run": pl.Int64}
"""One row per key: the newest reading's ts (µs) and value, and its identical-value run."""
_COLUMNS = ["tenant", "device_id", "metric", "ts", "value", "quality", "received_at"]


def empty_state() -> pl.DataFrame:
    return pl.DataFrame(schema=STATE_SCHEMA)


class QualityStage:
    """Flags readings (see the module docstring); keeps the last reading of every key."""

    name = "quality"

    def __init__(self) -> None:
        self._committed = empty_state()
        self._pending: pl.DataFrame | None = None
        self._rules: Rules | None = None
        self._rules_for: tuple[int, int] = (0, 0)

    @property
    def state(self) -> pl.DataFrame:
        """The key state the next batch is compared with."""
        return self._pending if self._pending is not None else self._committed

    def commit(self) -> None:
        if self._pending is not None:
            self._committed, self._pending = self._pending, None

    def rollback(self) -> None:
        self._pending = None

    def process(self, batch: Batch, ctx: Context) -> Batch:
        readings = batch.readings
        settings = ctx.settings.quality
        if not settings.enabled or readings.num_rows == 0:
            return batch
        frame = _sorted_frame(readings)
        state = self.state
        seeds = _seed(frame, state, ctx)
        known = pl.concat([state, seeds]) if seeds.height else state
        flagged, updates = flag(frame, known, self._rules_of(ctx), settings)
        self._pending = _advance(state, pl.concat([seeds.join(
            updates, on=KEY, how="anti"), updates]), settings.max_keys)
        quality = np.empty(readings.num_rows, np.int16)
        quality[flagged["_row"].to_numpy()] = flagged["quality"].to_numpy()
        index = readings.schema.get_field_index("quality")
        out = readings.set_column(index, readings.schema.field(index), pa.array(quality))
        return Batch(out, batch.rejects)

    def _rules_of(self, ctx: Context) -> Rules:
        """Thresholds, rebuilt only when the settings or the registry snapshot change."""
        marker = (id(ctx.settings), id(ctx.device_tags))
        if self._rules is None or marker != self._rules_for:
            self._rules, self._rules_for = build_rules(ctx.settings, ctx.device_tags), marker
        return self._rules


def _sorted_frame(readings: pa.Table) -> pl.DataFrame:
    """The columns the stage needs, ts and received_at in µs, `_row` (position in the
    batch), sorted by key and ts, with `first` marking each key's first row.

    Sorting integer codes (Arrow dictionary encoding + numpy lexsort) is four times faster
    than polars sorting three string columns."""
    codes = [pc.dictionary_encode(readings.column(c)).combine_chunks().indices.to_numpy(
        zero_copy_only=False) for c in KEY]
    ts = pc.cast(readings.column("ts"), pa.int64()).to_numpy()
    order = np.lexsort((ts, codes[2], codes[1], codes[0]))
    changed = np.zeros(len(order), bool)
    changed[0] = True
    for code in codes:
        ordered = code[order]
        changed[1:] |= ordered[1:] != ordered[:-1]
    frame = pl.from_arrow(readings.select(_COLUMNS).take(pa.array(order)))
    assert isinstance(frame, pl.DataFrame)
    return frame.with_columns(
        pl.col("ts").dt.epoch("us"), pl.col("received_at").dt.epoch("us"),
        pl.Series("_row", order), pl.Series("first", changed))


def flag(frame: pl.DataFrame, state: pl.DataFrame, rules: Rules,
         q: QualitySettings) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(_row, quality) of every reading, and the new state rows of the keys that advanced.

    `frame` (from `_sorted_frame`) is sorted by key and ts: _row, first, tenant, device_id,
    metric, ts and received_at (µs), value, quality."""
    frame = frame.join(state, on=KEY, how="left", maintain_order="left").join(
        rules.metrics, on="metric", how="left", maintain_order="left")
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
    carry = pl.when(pl.col("use_state") & same).then("run").otherwise(0)
    frame = frame.with_columns(
        run=position - pl.when(boundary).then(position).forward_fill() + 1
        + pl.when(boundary).then(carry).forward_fill())
    dt = ts - pl.col("prev_ts")
    min_dt = int(q.spike_min_interval_seconds * 1e6)
    rate = (value - pl.col("prev_value")).abs() / pl.max_horizontal(dt, pl.lit(min_dt))
    ahead = int(q.clock_ahead_seconds * 1e6)
    behind = int(q.clock_behind_days * 86400e6)
    received = pl.col("received_at")
    bits = (
        _bit((value < pl.col("lo")) | (value > pl.col("hi")), Quality.OUT_OF_RANGE)
        | _bit(pl.col("run") >= pl.col("stuck_n"), Quality.STUCK)
        | _bit(rate > pl.col("spike_per_us"), Quality.SPIKE)
        | _bit(dt > cadence * q.gap_factor, Quality.GAP)
        | _bit((ts - received > ahead) | (received - ts > behind), Quality.CLOCK_SUSPECT)
    )
    frame = frame.with_columns((pl.col("quality").cast(pl.Int32) | bits).cast(pl.Int16)
                               .alias("quality"))
    last = pl.col("first").shift(-1).fill_null(True)
    updates = frame.filter(last & pl.col("is_new")).select(
        *KEY, pl.col("ts").alias("last_ts"), pl.col("value").alias("last_value"), "run")
    return frame.select("_row", "quality"), updates


def _bit(condition: pl.Expr, bit: int) -> pl.Expr:
    return pl.when(condition.fill_null(False)).then(pl.lit(bit, pl.Int32)).otherwise(
        pl.lit(0, pl.Int32))


def _seed(frame: pl.DataFrame, state: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    """State rows for keys of the batch the stage has not seen, from the hot store."""
    if ctx.previous is None:
        return empty_state()
    unseen = frame.select(KEY).unique().join(state.select(KEY), on=KEY, how="anti")
    if unseen.height == 0:
        return empty_state()
    found = ctx.previous(unseen.to_arrow())
    if found.num_rows == 0:
        return empty_state()
    rows = pl.from_arrow(found.select(PREVIOUS_SCHEMA.names))
    assert isinstance(rows, pl.DataFrame)
    return rows.select(*KEY, pl.col("ts").dt.epoch("us").alias("last_ts"),
                       pl.col("value").cast(pl.Float64).alias("last_value"),
                       pl.lit(1, pl.Int64).alias("run")).join(
        unseen, on=KEY, how="semi").cast(STATE_SCHEMA)  # type: ignore[arg-type]


def _advance(state: pl.DataFrame, fresh: pl.DataFrame, max_keys: int) -> pl.DataFrame:
    """`state` with `fresh` upserted, cut to the `max_keys` most recently advanced keys."""
    if fresh.height == 0:
        return state
    merged = pl.concat([state.join(fresh, on=KEY, how="anti"), fresh.cast(STATE_SCHEMA)])
    if merged.height > max_keys:  # cut to 90 % so the trim is not paid on every batch
        merged = merged.top_k(max(1, max_keys * 9 // 10), by="last_ts")
    return merged


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
