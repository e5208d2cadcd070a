"""The data model: the Reading Arrow schema and the METRICS catalog.

A *reading* is one row: one metric of one device at one instant. Its identity is
(tenant, device_id, metric, ts); every sink is idempotent on that key.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import pyarrow as pa

TS_TYPE = pa.timestamp("us", tz="UTC")

READING_SCHEMA = pa.schema(
    [
        pa.field("tenant", pa.string(), nullable=False),
        pa.field("device_id", pa.string(), nullable=False),
        pa.field("metric", pa.string(), nullable=False),
        pa.field("ts", TS_TYPE, nullable=False),
        pa.field("value", pa.float64(), nullable=False),
        pa.field("quality", pa.int16(), nullable=False),
        pa.field("received_at", TS_TYPE, nullable=False),
        # Where the reading was taken: the message's GPS fix, else the device's static location.
        pa.field("lat", pa.float64()),
        pa.field("lon", pa.float64()),
    ]
)
"""Columns of a stored reading (hot store, lake `readings/`, exports)."""

READING_KEY = ("tenant", "device_id", "metric", "ts")
"""A reading's identity: no sink ever stores two rows with the same key."""


class Kind(StrEnum):
    """How a metric behaves over time."""

    GAUGE = "gauge"
    """A level sampled at an instant (temperature, pm2_5)."""
    COUNTER = "counter"
    """A cumulative total that only grows until a reset (energy in kWh)."""


@dataclass(frozen=True)
class Metric:
    """One entry of the METRICS catalog."""

    name: str
    unit: str
    kind: Kind
    minimum: float
    maximum: float
    precision: float
    """Values are rounded to this step on ingest (0.1 = one decimal)."""
    description: str
    derived: bool = False
    """True when sensorlake computes it (AQI, cost) rather than a device sending it."""


def _m(name: str, unit: str, kind: Kind, lo: float, hi: float, step: float, text: str,
       derived: bool = False) -> Metric:
    return Metric(name, unit, kind, lo, hi, step, text, derived)


G, C = Kind.GAUGE, Kind.COUNTER

METRICS: dict[str, Metric] = {
    m.name: m
    for m in [
        _m("pm1", "µg/m³", G, 0, 2000, 0.1, "Particulate matter below 1 µm"),
        _m("pm2_5", "µg/m³", G, 0, 2000, 0.1, "Particulate matter below 2.5 µm"),
        _m("pm10", "µg/m³", G, 0, 2000, 0.1, "Particulate matter below 10 µm"),
        _m("co2", "ppm", G, 0, 40000, 1, "Carbon dioxide concentration"),
        _m("temperature", "°C", G, -90, 90, 0.01, "Air temperature"),
        _m("humidity", "%", G, 0, 100, 0.1, "Relative humidity"),
        _m("pressure", "hPa", G, 300, 1100, 0.1, "Barometric pressure"),
        _m("power", "W", G, -1e9, 1e9, 0.1, "Active power (negative when exporting)"),
        _m("energy", "kWh", C, 0, 4294967.295, 0.001, "Cumulative energy counter"),
        _m("voltage", "V", G, 0, 100000, 0.01, "Voltage"),
        _m("current", "A", G, -100000, 100000, 0.001, "Current"),
        _m("latitude", "deg", G, -90, 90, 1e-6, "Latitude (WGS 84)"),
        _m("longitude", "deg", G, -180, 180, 1e-6, "Longitude (WGS 84)"),
        _m("rssi", "dBm", G, -200, 50, 1, "Received signal strength (best gateway, or WiFi)"),
        _m("snr", "dB", G, -50, 50, 0.01, "LoRa signal-to-noise ratio (best gateway)"),
        _m("f_cnt", "count", C, 0, 4294967295, 1, "LoRaWAN uplink frame counter"),
        _m("aqi_us", "index", G, 0, 9999, 1, "US EPA AQI from PM, per reading", True),
        _m("aqi_uk", "index", G, 1, 10, 1, "UK DAQI band from PM, per reading", True),
    ]
}
"""Every metric sensorlake knows, with its canonical unit and valid range.

Validation, the API and the docs read this table; a metric not in it is rejected by
validation unless declared under `[metrics]` in the settings.
"""

LOCATION_METRICS = ("latitude", "longitude")


def empty_readings() -> pa.Table:
    """A table with the reading schema and no rows."""
    return READING_SCHEMA.empty_table()


class Quality:
    """Bits of a reading's `quality` field (0 = nothing to say). Flags never change a value."""

    OUT_OF_RANGE = 1 << 0
    STUCK = 1 << 1
    SPIKE = 1 << 2
    GAP = 1 << 3
    CLOCK_SUSPECT = 1 << 4
    CALIBRATED = 1 << 5
    """The stored value is the raw value after the device's calibration (scale, offset)."""
    INTERPOLATED = 1 << 6


QUALITY_FLAGS: dict[str, int] = {
    name.lower(): value for name, value in vars(Quality).items() if not name.startswith("_")}
"""Flag names as the API spells them (`spike`, `clock_suspect` ...) -> their bit value."""


def flag_names(quality: int) -> list[str]:
    """The names of the bits set in `quality`, lowest bit first."""
    return [name for name, bit in QUALITY_FLAGS.items() if quality & bit]
