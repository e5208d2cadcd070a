"""Interpreter settings for sensorlake's long-running service processes (`up`, `demo`,
`run <role>`); library users and tests keep Python's defaults."""

from __future__ import annotations

import atexit
import gc

GC_THRESHOLDS = (50_000, 20, 100)
"""Young collections after 50,000 net allocations instead of 700."""


def tune_for_service() -> None:
    """Freeze what start-up loaded and collect young objects less often.

    Ingest and the worker allocate and free millions of short-lived containers a minute
    (decoded JSON); reference counting frees them, yet by default the cyclic collector also
    walks the young generation every 700 allocations and, now and then, the whole heap —
    modules, pydantic models, routes. Measured on the batch benchmark: about a fifth of the
    worker's CPU. Freezing the start-up heap takes it out of those walks for good, and the
    higher threshold makes young collections rare; cycles are still collected. At exit the
    heap is unfrozen, so interpreter shutdown frees those objects as usual (DuckDB's bindings
    report every object still alive then as a leak).
    """
    gc.freeze()
    atexit.register(gc.unfreeze)
    gc.set_threshold(*GC_THRESHOLDS)
