"""validate: reject readings that cannot be true, with a reason naming device, metric, value.

Checks, all on the whole table: the metric is in the catalog (or declared in `[metrics]`),
the value is finite and inside the metric's valid range, the timestamp is neither before
`validate.earliest` nor more than `validate.future_seconds` ahead of now.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from sensorlake.model import METRICS, TS_TYPE
from sensorlake.process.base import REJECT_SCHEMA, Batch, Context


def metric_catalog(ctx: Context) -> pl.DataFrame:
    """The built-in METRICS plus the settings' `[metrics]` (which override a built-in of the
    same name), one row per metric, as a frame."""
    extra = ctx.settings.metrics
    rows = [(m.name, m.unit, m.minimum, m.maximum, m.precision) for m in METRICS.values()
            if m.name not in extra]
    rows += [(name, m.unit, m.minimum, m.maximum, m.precision) for name, m in extra.items()]
    return pl.DataFrame(rows, schema={"metric": pl.String, "unit": pl.String,
                                      "minimum": pl.Float64, "maximum": pl.Float64,
                                      "precision": pl.Float64}, orient="row")


class ValidateStage:
    name = "validate"

    def process(self, batch: Batch, ctx: Context) -> Batch:
        if batch.readings.num_rows == 0:
            return batch
        ok = plausible(batch.readings, ctx)
        if pc.all(ok).as_py():
            return batch
        rejected = self._reasons(batch.readings.filter(pc.invert(ok)), ctx)
        return batch.with_rejects(batch.readings.filter(ok), rejected)

    def _reasons(self, suspects: pa.Table, ctx: Context) -> pa.Table:
        """REJECT_SCHEMA rows naming what is wrong with each of `suspects` (every one of
        them fails a check: `plausible` said so)."""
        frame = pl.from_arrow(suspects)
        assert isinstance(frame, pl.DataFrame)
        catalog = metric_catalog(ctx)
        earliest = ctx.settings.validation.earliest
        latest = ctx.now + timedelta(seconds=ctx.settings.validation.future_seconds)
        accept_unknown = ctx.settings.validation.unknown_metrics == "accept"
        known = ", ".join(sorted(catalog["metric"].to_list()))

        joined = frame.with_row_index("_row").join(catalog, on="metric", how="left")
        value = pl.col("value")
        shown = value.cast(pl.String)
        reason = (
            pl.when(pl.col("unit").is_null() & (not accept_unknown))
            .then(pl.format("{}: unknown metric '{}' (known: {}; declare others under [metrics] "
                            "in sensorlake.toml)", "device_id", "metric", pl.lit(known)))
            .when(~value.is_finite())
            .then(pl.format("{}: {}={} is not a finite number", "device_id", "metric", shown))
            .when((value < pl.col("minimum")) | (value > pl.col("maximum")))
            .then(pl.format("{}: {}={} is outside the valid range [{}, {}] {}", "device_id",
                            "metric", shown, pl.col("minimum"), pl.col("maximum"), "unit"))
            .when(pl.col("ts") < pl.lit(earliest))
            .then(pl.format("{}: {} timestamp {} is before {}", "device_id", "metric",
                            pl.col("ts").dt.to_string("%Y-%m-%dT%H:%M:%S%.fZ"),
                            pl.lit(earliest.isoformat().replace("+00:00", "Z"))))
            .when(pl.col("ts") > pl.lit(latest))
            .then(pl.format("{}: {} timestamp {} is in the future (server time {}); check "
                            "the device clock", "device_id", "metric",
                            pl.col("ts").dt.to_string("%Y-%m-%dT%H:%M:%SZ"),
                            pl.lit(ctx.now.strftime("%Y-%m-%dT%H:%M:%SZ"))))
            .otherwise(None)
        )
        bad = joined.with_columns(reason.alias("_reason")).sort("_row")
        return pa.table({
            "msg_id": bad["msg_id"].to_arrow(), "tenant": bad["tenant"].to_arrow(),
            "device_id": bad["device_id"].to_arrow(),
            "stage": pa.repeat(self.name, bad.height),
            "field": bad["metric"].to_arrow(), "value": bad["value"].cast(pl.String).to_arrow(),
            "reason": bad["_reason"].to_arrow(),
        }, schema=REJECT_SCHEMA)


def plausible(readings: pa.Table, ctx: Context) -> pa.ChunkedArray:
    """True for each reading that passes every check, on Arrow kernels (most batches are
    all good, and then the reasons are never built)."""
    catalog = metric_catalog(ctx)
    names = pa.array(catalog["metric"].to_list(), pa.string())
    row = pc.index_in(readings.column("metric"), value_set=names)
    value = readings.column("value")
    minimum = pa.array(catalog["minimum"].to_list(), pa.float64()).take(row)
    maximum = pa.array(catalog["maximum"].to_list(), pa.float64()).take(row)
    in_range = pc.and_kleene(pc.greater_equal(value, minimum), pc.less_equal(value, maximum))
    known = pc.is_valid(row)
    if ctx.settings.validation.unknown_metrics == "accept":
        in_range = pc.or_kleene(pc.invert(known), in_range)
    else:
        in_range = pc.and_kleene(known, in_range)
    earliest = pa.scalar(ctx.settings.validation.earliest, TS_TYPE)
    latest = pa.scalar(ctx.now + timedelta(seconds=ctx.settings.validation.future_seconds),
                       TS_TYPE)
    ts = readings.column("ts")
    ok = pc.and_kleene(pc.and_kleene(pc.is_finite(value), in_range),
                       pc.and_kleene(pc.greater_equal(ts, earliest), pc.less_equal(ts, latest)))
    return pc.fill_null(ok, False)
