"""The cost estimator against hand-computed cases (prices from the bundled file)."""

from __future__ import annotations

import math

import orjson
import pytest
from typer.testing import CliRunner

from sensorlake.cli import app
from sensorlake.ops.cost import Workload, estimate, load_prices, tiered, units

PRICES = load_prices()


def line(result, item: str):
    return next(x for x in result.lines if x.item == item)


def test_seed_arithmetic_150_devices_every_5_seconds() -> None:
    result = estimate(Workload(devices=150, interval_s=5, payload_bytes=200), PRICES)
    assert result.messages_per_device_month == 518_400
    assert result.messages_month == 77_760_000
    assert result.readings_month == 77_760_000 * 5
    # 77.76 million messages x $1.00, one 5 KB unit each
    assert line(result, "IoT Core messaging").monthly == pytest.approx(77.76)
    # 150 devices x 43,200 minutes = 6.48 million connection-minutes x $0.08
    assert line(result, "IoT Core connectivity").monthly == pytest.approx(0.5184)
    # one rule and one action per message: 77.76 x (0.15 + 0.15)
    assert line(result, "IoT rules engine").monthly == pytest.approx(23.328)
    # 30 msg/s fits one shard: 720 shard-hours x $0.015
    assert line(result, "Kinesis Data Streams shards").monthly == pytest.approx(10.80)
    # Timestream: 77.76 million 1 KB writes x $0.50
    assert line(result, "Timestream writes").monthly == pytest.approx(38.88)
    assert result.total("sensorlake") == pytest.approx(20.0)
    assert result.total("aws") > 150


def test_lorawan_replaces_connectivity_and_messaging() -> None:
    result = estimate(Workload(devices=1000, interval_s=600, payload_bytes=20, lorawan=True),
                      PRICES)
    assert result.messages_month == 1000 * 30 * 144
    assert line(result, "IoT Core for LoRaWAN messages").monthly == pytest.approx(4.32 * 2.30)
    assert not any(x.item.startswith("IoT Core connectivity") for x in result.lines)


def test_metering_units_and_tiers() -> None:
    assert units(200, 5120) == 1 and units(5120, 5120) == 1 and units(5121, 5120) == 2
    assert tiered(500, [[1000, 1.0], [5000, 0.8], [1e12, 0.7]]) == 500
    assert tiered(1500, [[1000, 1.0], [5000, 0.8], [1e12, 0.7]]) == pytest.approx(1400)
    big = estimate(Workload(devices=10, interval_s=60, payload_bytes=6000), PRICES)
    assert line(big, "IoT Core messaging").quantity == big.messages_month * 2


def test_storage_grows_linearly_and_the_years_add_up() -> None:
    result = estimate(Workload(devices=150, interval_s=5, payload_bytes=200, years=3), PRICES)
    gb = [g["aws_s3_gb"] for g in result.growth]
    assert len(gb) == 3 and gb[1] == pytest.approx(2 * gb[0], rel=1e-3)
    # S3: 77.76 M messages x 200 B x 0.25 per month, 12 months
    assert gb[0] == pytest.approx(77_760_000 * 200 * 0.25 * 12 / 1024**3, rel=1e-3)
    own = result.growth[0]["sensorlake_total_year"]
    assert own == pytest.approx(12 * 20.0)  # the disk is within the included 160 GB in year 1
    assert math.isclose(result.as_dict()["total_3y"]["aws"],
                        sum(g["aws_total_year"] for g in result.growth), rel_tol=1e-9)


def test_cli_json_and_bad_input() -> None:
    runner = CliRunner()
    out = runner.invoke(app, ["cost", "--devices", "150", "--interval", "5s", "--payload",
                              "200B", "--retention-hot", "30d", "--years", "3", "-f", "json"])
    assert out.exit_code == 0, out.output
    doc = orjson.loads(out.stdout)
    assert doc["messages_per_device_month"] == 518_400
    bad = runner.invoke(app, ["cost", "--devices", "5", "--payload", "lots"])
    assert bad.exit_code == 1 and "is not a size" in bad.output
