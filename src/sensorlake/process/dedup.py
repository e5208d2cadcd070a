"""dedup: one row per reading identity (tenant, device_id, metric, ts) within a batch.

Delivery is at least once, so the same reading may come twice in one batch (a retried
request, a replayed span). The first occurrence in log order wins; later copies are dropped
without a reject (they are not errors). Across batches the sinks' idempotence does the rest.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from sensorlake.model import READING_KEY
from sensorlake.process.base import Batch, Context


def first_per_key(readings: pa.Table) -> pa.Table:
    """Keep the first row of every READING_KEY (input order preserved); cheap when unique."""
    if readings.num_rows < 2:
        return readings
    keys = pl.from_arrow(readings.select(list(READING_KEY)))
    assert isinstance(keys, pl.DataFrame)
    if keys.select(pl.struct(list(READING_KEY)).hash()).to_series().n_unique() == keys.height:
        return readings  # distinct hashes: distinct keys (a collision only costs the check)
    first = keys.select(pl.struct(list(READING_KEY)).is_first_distinct()).to_series()
    return readings.filter(first.to_arrow())


class DedupStage:
    name = "dedup"

    def process(self, batch: Batch, ctx: Context) -> Batch:
        kept = first_per_key(batch.readings)
        return batch if kept is batch.readings else Batch(kept, batch.rejects)
