"""Settings of the operations side: jobs, compaction, status, alerts, ETL imports."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from sensorlake.config_base import Section


class JobsSettings(Section):
    enabled: bool = Field(
        True, description="Run the scheduler inside `sensorlake up` (retention, compaction, "
        "alerts, imports); turn off when `sensorlake run scheduler` runs elsewhere.")
    schedules: dict[str, str] = Field(
        default_factory=dict, description="Per job: 'every <duration>', a cron expression "
        "(UTC) or 'off', overriding the job's default schedule.")
    tick_seconds: float = Field(1.0, gt=0, description="How often the scheduler looks for "
                                "due jobs and queued runs.")
    max_parallel: int = Field(2, ge=1, description="Most job runs at the same time.")


class CompactionSettings(Section):
    target_bytes: int = Field(
        128 << 20, gt=0, description="Lake compaction merges small files of a partition into "
        "files of about this size.")
    min_age_seconds: float = Field(
        7200, ge=0, description="Only partitions whose hour ended at least this long ago are "
        "compacted (recent hours still receive files).")


class StatusSettings(Section):
    silent_factor: float = Field(
        3, gt=1, description="A device is silent when it has sent nothing for this many of "
        "its usual intervals (and at least status.silent_min_seconds).")
    silent_min_seconds: float = Field(
        600, gt=0, description="Shortest silence reported for a device.")
    disk_warn_hours: float = Field(
        72, gt=0, description="Warn when the data folder's disk fills within this many hours.")
    disk_min_free_bytes: int = Field(
        1 << 30, ge=0, description="Warn when the data folder's disk has less free space.")
    lag_warn_seconds: float = Field(
        300, gt=0, description="Warn when the oldest envelope not yet in the lake is older.")
    metrics_public: bool = Field(
        True, description="Serve /metrics without a token (Prometheus scrapers); false "
        "requires an owner token.")


class AlertRule(Section):
    name: str = Field(description="Unique name of the rule.")
    kind: Literal["threshold", "no_data", "rate_of_change", "pipeline_lag",
                  "disk_headroom"] = Field(description="What the rule watches.")
    tenant: str | None = Field(None, description="Tenant whose readings it watches "
                               "(default: default_tenant).")
    metric: str | None = None
    devices: list[str] = Field(default_factory=list, description="Only these devices.")
    above: float | None = None
    below: float | None = None
    window: str = Field("10m", description="threshold / rate_of_change: the window.")
    agg: Literal["mean", "min", "max"] | None = Field(
        None, description="threshold: aggregate over the window (default: sustained, i.e. "
        "min for above, max for below).")
    minutes: float | None = Field(None, gt=0, description="no_data: silence in minutes.")
    max_rise: float | None = None
    max_fall: float | None = None
    seconds: float | None = Field(None, gt=0, description="pipeline_lag: oldest unacked age.")
    min_free_bytes: int | None = None
    min_hours: float | None = None
    notify: list[Literal["log", "webhook", "mqtt"]] = Field(default_factory=lambda: ["log"])
    message: str = Field("", description="Extra text for the notification (what to do).")

    @model_validator(mode="after")
    def _complete(self) -> AlertRule:
        needs = {"threshold": (self.metric and (self.above is not None
                                                 or self.below is not None),
                               "metric and above or below"),
                 "no_data": (self.minutes, "minutes"),
                 "rate_of_change": (self.metric and (self.max_rise is not None
                                                      or self.max_fall is not None),
                                    "metric and max_rise or max_fall"),
                 "pipeline_lag": (self.seconds, "seconds"),
                 "disk_headroom": (self.min_free_bytes is not None
                                   or self.min_hours is not None,
                                   "min_free_bytes or min_hours")}
        ok, fields = needs[self.kind]
        if not ok:
            raise ValueError(f"alert rule '{self.name}' ({self.kind}) needs {fields}")
        return self


class AlertsSettings(Section):
    rules: list[AlertRule] = Field(default_factory=list, description="Alert rules "
                                   "([[alerts.rules]] tables).")
    webhooks: list[str] = Field(default_factory=list, description="URLs that receive a JSON "
                                "POST for every firing and resolved alert.")
    mqtt_host: str = Field("127.0.0.1", description="MQTT broker for alert notifications.")
    mqtt_port: int = Field(1883, ge=1, le=65535, description="Its port.")
    mqtt_topic_prefix: str = Field("sensorlake/alerts", description="Notifications go to "
                                   "<prefix>/<tenant>/<rule>.")


class EtlSettings(Section):
    rows_per_envelope: int = Field(
        500, gt=0, description="Rows of an imported file packed into one log envelope.")
