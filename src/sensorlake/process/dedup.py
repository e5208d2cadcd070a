"""dedup: one row per reading identity (tenant, device_id, metric, ts) within a batch.

Delivery is at least once, so the same reading may come twice in one batch (a retried
request, a replayed span). The first occurrence in log order wins; later copies are dropped
without a reject (they are not errors). Across batches the sinks' idempotence does the rest.
"""

from __future__ import annotations

import polars as pl

from sensorlake.model import READING_KEY
from sensorlake.process.base import Batch, Context


class DedupStage:
    name = "dedup"

    def process(self, batch: Batch, ctx: Context) -> Batch:
        if batch.readings.num_rows < 2:
            return batch
        frame = pl.from_arrow(batch.readings)
        assert isinstance(frame, pl.DataFrame)
        unique = frame.unique(subset=list(READING_KEY), keep="first", maintain_order=True)
        if unique.height == frame.height:
            return batch
        return type(batch)(unique.to_arrow().cast(batch.readings.schema), batch.rejects)
