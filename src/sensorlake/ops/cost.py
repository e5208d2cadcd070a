"""The cost estimator: a device fleet on the AWS serverless stack versus one sensorlake machine.

    estimate(Workload(devices=150, interval_s=5, payload_bytes=200)) -> Estimate

Every price comes from a dated data file (`ops/prices.toml`, or one given with `--prices`),
so updating a price is editing one number. A month is `month_days` days (30): 150 devices at
one message per 5 s is 30 x 86,400 / 5 = 518,400 messages per device per month.

AWS line items: IoT Core connectivity and messaging (or IoT Core for LoRaWAN), one rule with
one action per message, Kinesis Data Streams, a Lambda decoding each Kinesis batch, Firehose
to S3, S3 storage growing over the years, Timestream for the hot window, Athena for queries
over S3. sensorlake: one machine plus disk beyond what it includes.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sensorlake.errors import ConfigError

PRICES_FILE = Path(__file__).with_name("prices.toml")
GB = 1024**3
MINUTES_PER_DAY = 1440


@dataclass(frozen=True)
class Workload:
    """What the fleet sends."""

    devices: int
    interval_s: float
    payload_bytes: int = 200
    readings_per_message: int = 5
    retention_hot_days: float = 30
    lorawan: bool = False
    years: int = 3


@dataclass
class Line:
    """One priced item: what, how much, at what price, per month."""

    side: str
    item: str
    quantity: float
    unit: str
    monthly: float
    note: str = ""


@dataclass
class Estimate:
    workload: Workload
    prices_as_of: str
    messages_per_device_month: float
    messages_month: float
    readings_month: float
    lines: list[Line] = field(default_factory=list)
    growth: list[dict[str, float]] = field(default_factory=list)
    """Per year: storage at the end of it and the storage cost per month then."""

    def total(self, side: str) -> float:
        return sum(line.monthly for line in self.lines if line.side == side)

    def as_dict(self) -> dict[str, Any]:
        years = self.workload.years
        return {
            "workload": self.workload.__dict__, "prices_as_of": self.prices_as_of,
            "messages_per_device_month": self.messages_per_device_month,
            "messages_month": self.messages_month, "readings_month": self.readings_month,
            "lines": [line.__dict__ for line in self.lines],
            "monthly_total": {"aws": round(self.total("aws"), 2),
                              "sensorlake": round(self.total("sensorlake"), 2)},
            "growth": self.growth,
            f"total_{years}y": {
                "aws": round(sum(g["aws_total_year"] for g in self.growth), 2),
                "sensorlake": round(sum(g["sensorlake_total_year"] for g in self.growth), 2)},
        }


def load_prices(path: Path | None = None) -> dict[str, Any]:
    """The price table (the bundled one unless `path` is given)."""
    file = path or PRICES_FILE
    try:
        return tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read the price file {file}: {exc}; copy "
                          f"{PRICES_FILE} and edit it") from exc


def tiered(quantity_millions: float, tiers: list[list[float]]) -> float:
    """Cost of `quantity_millions` under [up to N million, price per million] tiers."""
    cost, below = 0.0, 0.0
    for limit, price in tiers:
        part = min(quantity_millions, limit) - below
        if part <= 0:
            break
        cost += part * price
        below = limit
    return cost


def units(size: float, unit: float) -> int:
    """Metering units of `unit` bytes that a payload of `size` bytes counts as (at least 1)."""
    return max(1, math.ceil(size / unit))


def estimate(work: Workload, prices: dict[str, Any] | None = None) -> Estimate:
    """Monthly cost of both sides, and storage growth for `work.years`."""
    if work.devices < 1 or work.interval_s <= 0 or work.payload_bytes < 1:
        raise ConfigError("devices, interval and payload must be positive")
    p = prices or load_prices()
    days = float(p.get("month_days", 30))
    per_device = days * 86_400 / work.interval_s
    messages = per_device * work.devices
    readings = messages * work.readings_per_message
    out = Estimate(work, str(p.get("as_of", "unknown")), per_device, messages, readings)
    _aws(out, p, days)
    _self_hosted(out, p)
    _growth(out, p)
    return out


def _aws(out: Estimate, p: dict[str, Any], days: float) -> None:
    work, msgs, add = out.workload, out.messages_month, out.lines.append
    iot, lam, kin, fh, ts, ath = (p["iot_core"], p["lambda"], p["kinesis"], p["firehose"],
                                  p["timestream"], p["athena"])
    millions = msgs / 1e6
    if work.lorawan:
        add(Line("aws", "IoT Core for LoRaWAN messages", msgs, "messages",
                 millions * iot["lorawan_messages_per_million"]))
    else:
        minutes = work.devices * days * MINUTES_PER_DAY
        add(Line("aws", "IoT Core connectivity", minutes, "connection-minutes",
                 minutes / 1e6 * iot["connectivity_per_million_minutes"], "always connected"))
        metered = msgs * units(work.payload_bytes, iot["message_unit_bytes"])
        add(Line("aws", "IoT Core messaging", metered, "5 KB messages",
                 tiered(metered / 1e6, iot["messaging_tiers"])))
    add(Line("aws", "IoT rules engine", msgs, "rules + actions",
             millions * (iot["rules_triggered_per_million"] + iot["actions_applied_per_million"]),
             "one rule, one action (to Kinesis) per message"))
    per_second = msgs / (days * 86_400)
    shards = max(1, math.ceil(per_second / kin["shard_messages_per_second"]),
                 math.ceil(per_second * work.payload_bytes / kin["shard_bytes_per_second"]))
    add(Line("aws", "Kinesis Data Streams shards", shards * days * 24, "shard-hours",
             shards * days * 24 * kin["shard_hour"], f"{shards} shard(s)"))
    put_units = msgs * units(work.payload_bytes, kin["put_unit_bytes"])
    add(Line("aws", "Kinesis PUT payload units", put_units, "25 KB units",
             put_units / 1e6 * kin["put_payload_units_per_million"]))
    calls = msgs / lam["records_per_invocation"]
    gb_s = calls * lam["seconds_per_invocation"] * lam["memory_gb"]
    add(Line("aws", "Lambda (decode, validate)", calls, "invocations",
             calls / 1e6 * lam["requests_per_million"] + gb_s * lam["gb_second"],
             f"{lam['records_per_invocation']} records per invocation"))
    fh_gb = msgs * units(work.payload_bytes, fh["record_unit_bytes"]) * fh["record_unit_bytes"] / GB
    add(Line("aws", "Firehose to S3", fh_gb, "GB billed", fh_gb * fh["per_gb_ingested"],
             "records rounded up to 5 KB"))
    s3 = p["s3"]
    puts = s3["objects_per_hour"] * days * 24
    add(Line("aws", "S3 PUT requests", puts, "requests", puts / 1000 * s3["put_per_thousand"]))
    add(Line("aws", "S3 storage (end of year 1)", aws_s3_gb(out, p, 12), "GB-month",
             aws_s3_gb(out, p, 12) * s3["standard_gb_month"], "grows every month"))
    writes = msgs * units(work.payload_bytes, ts["write_unit_bytes"])
    add(Line("aws", "Timestream writes", writes, "1 KB writes",
             writes / 1e6 * ts["writes_per_million"]))
    day_gb = out.readings_month / days * ts["bytes_per_reading"] / GB
    memory_gb = day_gb * ts["memory_store_hours"] / 24
    add(Line("aws", "Timestream memory store", memory_gb * days * 24, "GB-hours",
             memory_gb * days * 24 * ts["memory_store_gb_hour"],
             f"{ts['memory_store_hours']} h in memory"))
    magnetic = day_gb * work.retention_hot_days
    add(Line("aws", "Timestream magnetic store", magnetic, "GB-month",
             magnetic * ts["magnetic_store_gb_month"], f"{work.retention_hot_days:g} days hot"))
    scanned = ath["queries_per_month"] * ath["gb_scanned_per_query"]
    add(Line("aws", "Athena queries", scanned, "GB scanned", scanned / 1024 * ath["per_tb_scanned"],
             f"{ath['queries_per_month']} queries"))


def aws_s3_gb(out: Estimate, p: dict[str, Any], month: int) -> float:
    """GB in S3 after `month` months (raw envelopes, compressed)."""
    return out.messages_month * out.workload.payload_bytes * p["s3"]["compression_ratio"] \
        * month / GB


def sensorlake_gb(out: Estimate, p: dict[str, Any], month: int) -> float:
    """GB on the sensorlake machine after `month` months: lake (readings and raw), hot store."""
    sh = p["self_hosted"]
    lake_month = (out.readings_month * sh["lake_bytes_per_reading"]
                  + out.messages_month * out.workload.payload_bytes * sh["raw_compression_ratio"])
    days = float(p.get("month_days", 30))
    hot = out.readings_month / days * min(out.workload.retention_hot_days, month * days) \
        * sh["hot_bytes_per_reading"]
    return (lake_month * month + hot) / GB


def _self_hosted(out: Estimate, p: dict[str, Any]) -> None:
    sh = p["self_hosted"]
    out.lines.append(Line("sensorlake", "machine", 1, "machine", sh["machine_per_month"],
                          sh["source"]))
    extra = max(0.0, sensorlake_gb(out, p, 12) - sh["included_disk_gb"])
    out.lines.append(Line("sensorlake", "extra disk (end of year 1)", extra, "GB-month",
                          extra * sh["extra_disk_gb_month"],
                          f"beyond the {sh['included_disk_gb']} GB included"))


def _growth(out: Estimate, p: dict[str, Any]) -> None:
    """Storage at the end of each year, and what each side costs over that year."""
    fixed_aws = sum(line.monthly for line in out.lines
                    if line.side == "aws" and not line.item.startswith("S3 storage"))
    sh = p["self_hosted"]
    for year in range(1, out.workload.years + 1):
        months = range((year - 1) * 12 + 1, year * 12 + 1)
        aws_year = sum(fixed_aws + aws_s3_gb(out, p, m) * p["s3"]["standard_gb_month"]
                       for m in months)
        own_year = sum(sh["machine_per_month"] + max(0.0, sensorlake_gb(out, p, m)
                       - sh["included_disk_gb"]) * sh["extra_disk_gb_month"] for m in months)
        out.growth.append({
            "year": year, "sensorlake_gb": round(sensorlake_gb(out, p, year * 12), 2),
            "aws_s3_gb": round(aws_s3_gb(out, p, year * 12), 2),
            "aws_total_year": round(aws_year, 2), "sensorlake_total_year": round(own_year, 2),
        })
