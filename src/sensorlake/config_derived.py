"""Settings of what is derived from readings: time zones, rollups, AQI, energy, quality."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from sensorlake.config_base import Section


class TimeSettings(Section):
    """Local time: daily and monthly rollups, daily AQI and tariffs follow it."""

    timezone: str = Field("UTC", description="IANA zone of devices without a `tz` tag and "
                          "tenants not listed below (e.g. Europe/London).")
    tenants: dict[str, str] = Field(default_factory=dict,
                                    description="Zone per tenant, e.g. {acme = 'Europe/Berlin'}.")

    @model_validator(mode="after")
    def _known_zones(self) -> TimeSettings:
        from sensorlake.derived.timezones import zone

        for name in [self.timezone, *self.tenants.values()]:
            zone(name)
        return self


class RollupSettings(Section):
    """Rollups: 1 min, 1 h, 1 d and 1 mo aggregates per (device, metric)."""

    enabled: bool = Field(True, description="Maintain rollups in the hot store.")
    refresh_seconds: float = Field(
        10.0, ge=0, description="The worker recomputes dirty rollup buckets this often; a "
        "rollup query reads what is not refreshed yet from raw (read your writes). Each "
        "refresh reads a dirty minute back whole: at 1 Hz, every 2 s reads about 15 times "
        "what is written, every 10 s 3 times.")
    background: bool = Field(
        True, description="The worker refreshes on a thread of its own while it goes on with "
        "the next batches (one refresh at a time).")
    refresh_max_minutes: int = Field(
        200_000, gt=0, description="Most dirty (device, metric, minute) marks one worker "
        "refresh handles (whole keys, oldest first): a backlog, e.g. after an upgrade, drains "
        "over several short refreshes instead of one that blocks the worker.")
    final_after_seconds: float = Field(
        300, ge=0, description="A bucket is final this long after its end; a later change "
        "to a final bucket marks it revised.")


class AqiSettings(Section):
    """Hourly and daily air-quality indices computed from the PM rollups."""

    daqi_min_capture: float = Field(
        0.75, gt=0, le=1, description="Share of the 24 hours a DAQI running mean needs.")
    daily_min_capture: float = Field(
        0.75, gt=0, le=1, description="Share of a local day's hours a daily US AQI needs.")
    hour_min_capture: float = Field(
        0.75, ge=0, le=1, description="Share of a device's usual readings per hour (its "
        "median) an hourly mean needs to count as present (0: any reading).")


class EnergySettings(Section):
    """Energy deltas from counters and power, tariffs, cost and CO2e."""

    tariffs_file: Path | None = Field(
        None, description="tariffs.yaml (default: <data_dir>/tariffs.yaml when present).")
    grid_co2e_kg_per_kwh: float | None = Field(
        None, ge=0, description="Grid CO2e factor (kg/kWh) of tariffs and files that set none.")
    max_gap_seconds: float = Field(
        3900, gt=0, description="Longest interval between two readings that is not a gap: "
        "power is not integrated across a longer one, a counter delta across it is flagged.")
    counter_jitter_kwh: float = Field(
        0.01, ge=0, description="A counter drop this small is noise (delta 0), not a reset.")
    lookback_hours: float = Field(
        48, gt=0, description="History read before a range to find each device's previous "
        "reading.")


class QualitySettings(Section):
    """Quality flags set by the quality stage (docs/metrics.md#quality-flags)."""

    enabled: bool = Field(True, description="Run the quality stage.")
    expected: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="Per metric [low, high]: values outside are flagged "
        "OUT_OF_RANGE (overrides the built-in ranges; [-inf, inf] turns one off).")
    stuck_count: int = Field(
        10, ge=0, description="Identical consecutive values of a gauge that make the last one "
        "STUCK (0 = off).")
    stuck_min_seconds: float = Field(
        1800, ge=0, description="A run of identical values is STUCK only once it has also "
        "lasted this long (a slow quantity sampled every second repeats legitimately).")
    stuck_counts: dict[str, int] = Field(
        default_factory=dict, description="Per metric override of stuck_count (0 = off).")
    spike_per_minute: dict[str, float] = Field(
        default_factory=dict, description="Per metric |Δvalue| per minute above which a "
        "reading is a SPIKE (overrides the built-in limits; 0 = off).")
    spike_min_interval_seconds: float = Field(
        60, gt=0, description="The rate of change is taken over at least this long, so jitter "
        "between readings a second apart is not a spike.")
    cadence_seconds: float = Field(
        600, gt=0, description="A device's reporting interval when it has no `cadence` tag.")
    gap_factor: float = Field(
        3, gt=1, description="A reading after a silence longer than gap_factor × cadence "
        "is flagged GAP.")
    clock_ahead_seconds: float = Field(
        60, ge=0, description="A reading stamped more than this after its arrival is "
        "CLOCK_SUSPECT.")
    clock_behind_days: float = Field(
        30, gt=0, description="A reading stamped more than this before its arrival is "
        "CLOCK_SUSPECT (edge backfill of hours or days is not).")
    max_keys: int = Field(
        1_000_000, gt=0, description="Most (tenant, device, metric) keys whose last reading "
        "the stage remembers; the least recently updated are forgotten first.")
