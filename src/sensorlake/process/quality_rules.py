"""The thresholds of the quality stage: built-in defaults, `[quality]` settings, device tags.

Per metric: the expected range (OUT_OF_RANGE), the stuck run length (STUCK) and the spike
limit per minute (SPIKE). Per device: its cadence (GAP) from the `cadence` tag and an
expected range per metric from `expected.<metric>` tags ("low,high"). A tag that does not
parse is ignored with a warning naming the device, the tag and the value.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import polars as pl
import pyarrow as pa

from sensorlake.config import Settings
from sensorlake.errors import InputError
from sensorlake.model import METRICS, Kind
from sensorlake.timeparse import parse_duration

log = logging.getLogger(__name__)

EXPECTED: dict[str, tuple[float, float]] = {
    "pm1": (0, 1000),
    "pm2_5": (0, 1000),
    "pm10": (0, 1500),
    "co2": (300, 10000),
    "temperature": (-50, 60),
    "humidity": (1, 100),
    "pressure": (500, 1085),
}
"""Built-in expected ranges, narrower than the catalog's valid range (docs/metrics.md)."""

SPIKE_PER_MINUTE: dict[str, float] = {
    "pm1": 500,
    "pm2_5": 500,
    "pm10": 1000,
    "co2": 1000,
    "temperature": 5,
    "humidity": 20,
    "pressure": 10,
}
"""Built-in spike limits: |Δvalue| per minute (over at least spike_min_interval_seconds)."""

STUCK_OFF = ("latitude", "longitude", "rssi", "snr", "power", "current")
"""Gauges that legitimately repeat (a parked device, a switched-off load): no STUCK check."""

CADENCE_TAG = "cadence"
EXPECTED_TAG = "expected."


@dataclass(frozen=True)
class Rules:
    """Thresholds as small frames the stage joins onto a batch."""

    metrics: pl.DataFrame
    """metric, lo, hi, stuck_n, spike_per_us (null = no check), floor and ceiling (the valid
    range: a value pinned there, PM 0 in clean air or RH 100 % in fog, is not stuck)."""
    device_ranges: pl.DataFrame
    """tenant, device_id, metric, dev_lo, dev_hi from `expected.<metric>` tags."""
    cadences: pl.DataFrame
    """tenant, device_id, cadence_us from `cadence` tags."""


def metric_rules(settings: Settings) -> pl.DataFrame:
    """One row per metric that has any threshold."""
    q = settings.quality
    counters = {m.name for m in METRICS.values() if m.kind is Kind.COUNTER}
    counters |= {name for name, m in settings.metrics.items() if m.kind == "counter"}
    names = sorted(set(METRICS) | set(settings.metrics) | set(q.expected) | set(q.stuck_counts)
                   | set(q.spike_per_minute))
    expected = {**EXPECTED, **q.expected}
    spikes = {**SPIKE_PER_MINUTE, **q.spike_per_minute}
    stuck = {**dict.fromkeys(STUCK_OFF, 0), **q.stuck_counts}
    valid = {m.name: (m.minimum, m.maximum) for m in METRICS.values()}
    valid |= {name: (m.minimum, m.maximum) for name, m in settings.metrics.items()}
    rows = []
    for name in names:
        lo, hi = expected.get(name, (-math.inf, math.inf))
        floor, ceiling = valid.get(name, (-math.inf, math.inf))
        n = 0 if name in counters else stuck.get(name, q.stuck_count)
        spike = 0.0 if name in counters else spikes.get(name, 0.0)
        rows.append((name, float(lo), float(hi), n if n > 0 else None,
                     spike / 60e6 if spike > 0 else None, float(floor), float(ceiling)))
    return pl.DataFrame(rows, schema={"metric": pl.String, "lo": pl.Float64, "hi": pl.Float64,
                                      "stuck_n": pl.Int64, "spike_per_us": pl.Float64,
                                      "floor": pl.Float64, "ceiling": pl.Float64},
                        orient="row")


def tag_rules(tags: pa.Table) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(device ranges, cadences) from the registry tags; bad values are skipped."""
    ranges: list[tuple[str, str, str, float, float]] = []
    cadences: list[tuple[str, str, int]] = []
    frame = pl.from_arrow(tags) if tags.num_rows else None
    if isinstance(frame, pl.DataFrame):
        wanted = frame.filter((pl.col("tag") == CADENCE_TAG)
                              | pl.col("tag").str.starts_with(EXPECTED_TAG))
        for tenant, device, tag, value in wanted.iter_rows():  # one per tag, not per reading
            if tag == CADENCE_TAG:
                cadence = _cadence(value)
                if cadence is None:
                    _warn(tenant, device, tag, value, "a duration such as 60s or 5m")
                else:
                    cadences.append((tenant, device, cadence))
                continue
            bounds = _range(value)
            if bounds is None:
                _warn(tenant, device, tag, value, "two numbers 'low,high' with low < high")
            else:
                ranges.append((tenant, device, tag[len(EXPECTED_TAG):], *bounds))
    return (
        pl.DataFrame(ranges, schema={"tenant": pl.String, "device_id": pl.String,
                                     "metric": pl.String, "dev_lo": pl.Float64,
                                     "dev_hi": pl.Float64}, orient="row"),
        pl.DataFrame(cadences, schema={"tenant": pl.String, "device_id": pl.String,
                                       "cadence_us": pl.Int64}, orient="row"),
    )


def build_rules(settings: Settings, tags: pa.Table) -> Rules:
    ranges, cadences = tag_rules(tags)
    return Rules(metric_rules(settings), ranges, cadences)


def _cadence(text: str) -> int | None:
    try:
        step = parse_duration(text)
    except (InputError, ValueError):
        return None
    us = int(step.total_seconds() * 1e6)
    return us if us > 0 else None


def _range(text: str) -> tuple[float, float] | None:
    parts = text.replace("..", ",").split(",")
    if len(parts) != 2:
        return None
    try:
        lo, hi = float(parts[0]), float(parts[1])
    except ValueError:
        return None
    return (lo, hi) if lo < hi else None


def _warn(tenant: str, device: str, tag: str, value: str, wanted: str) -> None:
    log.warning("device '%s' (tenant '%s'): tag %s=%r is not %s; the quality stage ignores it",
                device, tenant, tag, value, wanted)
