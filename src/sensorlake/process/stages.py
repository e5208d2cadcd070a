"""The default stage list, in order. The pipeline runs exactly these, top to bottom."""

from __future__ import annotations

from sensorlake.process.aqi import AqiStage
from sensorlake.process.base import Stage
from sensorlake.process.dedup import DedupStage
from sensorlake.process.enrich import EnrichStage
from sensorlake.process.quality import QualityStage
from sensorlake.process.validate import ValidateStage


def default_stages() -> list[Stage]:
    return [ValidateStage(), DedupStage(), EnrichStage(), QualityStage(), AqiStage()]
