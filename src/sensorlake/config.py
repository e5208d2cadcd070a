"""Settings: one tree, read from `sensorlake.toml`, then `SENSORLAKE_*` variables, then flags.

Precedence (highest first): command-line flags, environment (`SENSORLAKE_HTTP__PORT=9000`;
nested names joined by `__`), the TOML file (`--config FILE`, `SENSORLAKE_CONFIG`, or
`./sensorlake.toml` when present), the defaults below. `sensorlake config show` prints every
value and where it came from.
"""

from __future__ import annotations

import math
import os
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from sensorlake.config_base import Section
from sensorlake.config_derived import (
    AqiSettings,
    EnergySettings,
    QualitySettings,
    RollupSettings,
    TimeSettings,
)
from sensorlake.config_ops import (
    AlertRule,
    AlertsSettings,
    CompactionSettings,
    EtlSettings,
    JobsSettings,
    StatusSettings,
)
from sensorlake.config_server import JetStreamSettings, PostgresSettings, S3Settings
from sensorlake.errors import ConfigError

__all__ = [  # the sections that live in modules of their own, importable from here too
    "AlertRule", "AlertsSettings", "AqiSettings", "CompactionSettings", "EnergySettings",
    "EtlSettings", "JetStreamSettings", "JobsSettings", "PostgresSettings", "QualitySettings",
    "RollupSettings", "S3Settings", "Section", "StatusSettings", "TimeSettings",
]

ENV_PREFIX = "SENSORLAKE_"
DEFAULT_CONFIG_FILE = Path("sensorlake.toml")


class HttpSettings(Section):
    host: str = Field("127.0.0.1", description="Address the HTTP API listens on.")
    port: int = Field(8750, ge=1, le=65535, description="Port of the HTTP API.")
    max_body_bytes: int = Field(
        8 << 20, gt=0, description="Largest request body accepted, after gzip (else 413).")
    retry_after_seconds: int = Field(
        2, ge=1, description="Retry-After sent with 503 when the log is full.")


class LogSettings(Section):
    max_bytes: int = Field(
        1 << 30, gt=0,
        description="Size cap of the log's payloads; over it ingest answers 503 (never deletes).")
    keep_acked_seconds: float = Field(
        3600, ge=0, description="How long acknowledged envelopes stay in the log for replay.")
    group_commit_max: int = Field(
        10000, gt=0, description="Most envelopes written in one durable commit.")


class WorkerSettings(Section):
    batch_messages: int = Field(
        20000, gt=0, description="Most envelopes the embedded worker reads from the log at "
        "once (batch_bytes bounds it too); a worker that falls behind then commits fewer, "
        "larger batches. Server workers fetch at most jetstream.fetch_messages of them.")
    batch_bytes: int = Field(
        4 << 20, gt=0, description="Most payload bytes read at once. Line protocol with 4 MiB "
        "batches overlaps stages and commits better than with 16 MiB (about 15-40 % faster "
        "to queryable in bench/sources.py) at no cost to batch envelopes.")
    poll_seconds: float = Field(0.2, gt=0, description="How long a worker waits for input.")
    linger_seconds: float = Field(
        0.25, ge=0, description="After a short batch (fewer than batch_messages envelopes and "
        "under half batch_bytes), wait this long before the next read so "
        "batches grow (fewer, larger commits at high message rates; adds this much latency).")
    lake_flush_seconds: float = Field(
        60, gt=0, description="Longest time readings wait before the lake file that holds them "
        "is written (the log is acknowledged only then).")
    lake_flush_rows: int = Field(
        2_000_000, gt=0, description="Readings that trigger a lake flush before the time limit.")
    lake_background: bool = Field(
        True, description="Write lake files on a thread of their own while the worker goes on "
        "with the next batches (one flush at a time; the log is still acknowledged only after "
        "the files are durable).")
    overlap_writes: bool = Field(
        True, description="When the worker is behind (full batches), run one batch's stages "
        "while the hot store commits the batch before (DuckDB works outside the GIL). A "
        "batch counts as processed only once its commit returned.")


class HotSettings(Section):
    retention_days: float = Field(
        30, gt=0, description="Readings older than this leave the hot store; the lake keeps them.")
    threads: int = Field(
        1, ge=1, description="Threads DuckDB uses for writes and queries. One keeps ingest "
        "and the worker fastest on a small machine; raise it for faster large queries.")


class LakeSettings(Section):
    compression: Literal["zstd", "snappy", "gzip", "none"] = Field(
        "zstd", description="Parquet compression codec.")
    compression_level: int = Field(9, description="Codec level (zstd: 1-22).")


class ValidationSettings(Section):
    earliest: datetime = Field(
        datetime(2000, 1, 1, tzinfo=UTC),
        description="Readings stamped before this are rejected (ISO 8601; no zone = UTC).")
    future_seconds: float = Field(
        300, ge=0, description="Readings stamped further than this in the future are rejected.")
    unknown_metrics: Literal["reject", "accept"] = Field(
        "reject", description="What to do with a metric that is neither in the catalog nor in "
        "[metrics]: reject (quarantine) or accept without range checks.")


    @field_validator("earliest")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=UTC)


class IngestSettings(Section):
    auto_register: bool = Field(
        False, description="Register unknown devices on first message instead of quarantining.")


class DeviceTypeSettings(Section):
    """How the codecs turn one device type's payloads into readings (`[device_types.<type>]`)."""

    payload_codec: str = Field(
        "cayenne_lpp", description="Codec for raw LoRaWAN bytes (ChirpStack `data`, TTS "
        "`frm_payload`) when no decoded object comes with them: cayenne_lpp or python.")
    channels: dict[str, str] = Field(
        default_factory=dict, description="Cayenne LPP channel -> metric (\"\" = ignore).")
    fields: dict[str, str] = Field(
        default_factory=dict, description="Decoded field or value type -> metric "
        "(\"\" = ignore); unmapped names are used as they are.")
    variables: dict[str, str] = Field(
        default_factory=dict, description="Passed to the type's Python codec (with the "
        "device's tags, which win).")


class CodecSettings(Section):
    folder: Path = Field(
        Path("codecs"), description="Folder of per-device-type Python codecs (<type>.py); "
        "a relative path is inside data_dir.")
    time_limit_seconds: float = Field(
        1.0, gt=0, description="Longest a Python codec may run on one message before the "
        "message is quarantined.")


class LorawanSettings(Section):
    radio_metrics: bool = Field(
        True, description="Also store rssi and snr of the best gateway and the frame "
        "counter f_cnt of every ChirpStack / TTS uplink.")


class LineProtocolSettings(Section):
    device_tag: str = Field("device", description="Tag that names the device of a line.")
    fallback_tag: str = Field(
        "host", description="Tag used when a line has no device_tag (Telegraf sets host).")
    fields: dict[str, str] = Field(
        default_factory=dict, description="Field -> metric, keyed `measurement.field` or "
        "`field` (\"\" = ignore); unmapped fields keep their name.")
    lines_per_envelope: int = Field(
        200, gt=0, description="Most lines per log envelope, of one device or of many "
        "(see mixed_envelopes); one request may make several.")
    mixed_envelopes: bool = Field(
        True, description="A request whose lines average under a quarter of "
        "lines_per_envelope per device goes to the log in envelopes of many devices "
        "(device id `*`; each line names its device): far fewer log rows for gateways "
        "that send many devices at once.")


class SensorCommunitySettings(Section):
    url: str = Field(
        "https://data.sensor.community/static/v1/data.json",
        description="Open-data file the poller reads (any data*.json or filter URL).")
    interval_seconds: float = Field(
        300, gt=0, description="Poll schedule: seconds between two polls.")
    sensor_ids: list[int] = Field(
        default_factory=list, description="Keep only these sensor ids (empty = every record).")
    timeout_seconds: float = Field(60, gt=0, description="HTTP timeout of one poll.")
    value_types: dict[str, str] = Field(
        default_factory=dict, description="Extra value_type -> metric mappings (\"\" = ignore).")


class MqttSubscription(Section):
    topic: str = Field("sensorlake/+/up", description="Topic filter; the `+` level named by "
                       "device_level holds the device id.")
    codec: str = Field("envelope", description="Codec the worker decodes these messages with.")
    tenant: str | None = Field(None, description="Tenant of the devices on this topic "
                               "(default: default_tenant); broker usernames are device ids.")
    device_level: int = Field(1, ge=0, description="Topic level (0-based) holding the device id.")


class MqttSettings(Section):
    url: str | None = Field(None, description="Broker to ingest from, e.g. mqtt://127.0.0.1:1883 "
                            "(mqtts:// for TLS); unset = no MQTT ingest.")
    username: str = Field("sensorlake-ingest", description="Broker username of the ingest.")
    password: SecretStr | None = Field(
        None, description="Broker password of the ingest (default: the file "
        "mqtt/ingest.password that `mosquitto-config` writes).")
    client_id: str = Field("sensorlake-ingest", description="MQTT client id; keep it stable "
                           "(persistent session) and distinct per ingest process.")
    protocol: Literal["5", "3.1.1"] = Field("5", description="MQTT protocol version.")
    shared_group: str | None = Field(None, description="Subscribe as $share/<group>/<topic> so "
                                     "several ingest processes share the messages.")
    subscriptions: dict[str, MqttSubscription] = Field(
        default_factory=lambda: {"devices": MqttSubscription()},
        description="Topics to ingest by name, each with its codec and tenant.")
    batch_messages: int = Field(1000, gt=0, description="Most messages appended in one log "
                                "append and PUBACKed together.")
    batch_seconds: float = Field(0.005, ge=0, description="How long received messages wait "
                                 "for more before their append.")
    receive_maximum: int = Field(
        20000, gt=0, le=65535, description="QoS 1 messages the broker may have in flight to "
        "ingest (MQTT 5 Receive Maximum; >= 2 x batch_messages, or ingest stalls).")
    session_expiry_seconds: int = Field(
        604800, ge=0, description="How long the broker keeps ingest's session while it is "
        "away (MQTT 5; MQTT 3.1.1 sessions are kept by the broker's settings).")
    keepalive_seconds: int = Field(30, gt=0, description="MQTT keepalive.")
    watermarks: bool = Field(True, description="Publish each device's watermark (retained, "
                             "QoS 1) on sensorlake/<device>/ack after every durable append.")
    reconnect_max_seconds: float = Field(
        30, gt=0, description="Longest pause between reconnect attempts (backoff with jitter).")


class EdgeSettings(Section):
    outbox: Path = Field(Path("sensorlake-outbox.db"), description="The edge agent's outbox "
                         "file (SQLite).")
    max_bytes: int = Field(256 << 20, gt=0, description="Outbox size cap (reading bytes).")
    when_full: Literal["reject", "drop-oldest"] = Field(
        "reject", description="Outbox full: refuse new readings, or drop the oldest unsent "
        "ones (counted and reported).")
    message_readings: int = Field(100, gt=0, description="Most reading sets per uploaded "
                                  "message (one seq).")
    window_messages: int = Field(20, gt=0, description="Messages sent and not yet confirmed "
                                 "by the watermark, at most.")
    backfill_per_second: float = Field(
        2000, gt=0, description="Backlog reading sets sent per second at most after an "
        "outage; live readings go first.")
    live_seconds: float = Field(30, gt=0, description="Readings younger than this are live: "
                                "sent ahead of the backlog.")
    resend_seconds: float = Field(10, gt=0, description="Resend unconfirmed messages when "
                                  "the watermark has not moved for this long.")
class ApiSettings(Section):
    max_points: int = Field(
        100_000, gt=0, description="Most points one readings response may hold; beyond it the "
        "API asks for a wider `every` (422) or pages with `next`.")
    auto_points: int = Field(
        600, gt=0, description="Points per metric that `every=auto` aims for (charts).")
    query_timeout_seconds: float = Field(
        10, gt=0, description="A range or latest query running longer is cancelled (504).")
    export_timeout_seconds: float = Field(
        600, gt=0, description="An export streaming longer than this is cut off.")
    max_json_body_bytes: int = Field(
        64 << 10, gt=0, description="Largest JSON body of the non-ingest routes (else 413).")
    public_tenant: str | None = Field(
        None, description="Public mode: visitors without a token see this tenant's public "
        "devices (map and latest values). Off when unset.")


class AuthSettings(Section):
    session_hours: float = Field(12, gt=0, description="Lifetime of a login session token.")
    rate_per_minute: int = Field(
        1200, ge=0, description="Requests per minute per token on the read API (burst: 10 s "
        "worth); over it the API answers 429 with Retry-After. 0 = no limit.")
    anonymous_rate_per_minute: int = Field(
        300, ge=0, description="The same per client address for visitors without a token.")
    policies_file: Path | None = Field(
        None, description="Cedar policies to use instead of the built-in ones (same schema).")


class DashboardSettings(Section):
    title: str = Field("sensorlake", description="Title of the web dashboard at `/`.")
    tile_url: str = Field(
        "https://tile.openstreetmap.org/{z}/{x}/{y}.png", description="Map tiles drawn over "
        "the bundled base map when the browser can reach them; empty = never.")


class ExtraMetric(Section):
    unit: str = Field(description="Canonical unit.")
    kind: Literal["gauge", "counter"] = "gauge"
    minimum: float = float("-inf")
    maximum: float = float("inf")
    precision: float = Field(
        0.0, ge=0, description="Rounding step, a power of ten (1, 0.1, 0.01); 0 = no rounding.")
    description: str = ""

    @field_validator("precision")
    @classmethod
    def _power_of_ten(cls, value: float) -> float:
        if value and abs(math.log10(value) - round(math.log10(value))) > 1e-9:
            raise ValueError(f"precision {value} must be a power of ten (1, 0.1, 0.01, ...)")
        return value


class Settings(BaseSettings):
    """Every sensorlake setting. Sections map to TOML tables and `SENSORLAKE_<SECTION>__<KEY>`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid",
        env_ignore_empty=True,
    )

    data_dir: Path = Field(
        Path("sensorlake-data"), description="Folder holding the log, stores, lake and registry.")
    profile: Literal["embedded", "server"] = Field(
        "embedded", description="embedded: SQLite log, DuckDB hot store, local Parquet lake; "
        "server: NATS JetStream, PostgreSQL, Parquet on S3 or local disk.")
    default_tenant: str = Field("default", description="Tenant used when a command names none.")
    http: HttpSettings = HttpSettings()
    log: LogSettings = LogSettings()
    worker: WorkerSettings = WorkerSettings()
    hot: HotSettings = HotSettings()
    lake: LakeSettings = LakeSettings()
    validation: ValidationSettings = ValidationSettings()
    ingest: IngestSettings = IngestSettings()
    jetstream: JetStreamSettings = JetStreamSettings()
    postgres: PostgresSettings = PostgresSettings()
    s3: S3Settings = S3Settings()
    mqtt: MqttSettings = MqttSettings()
    edge: EdgeSettings = EdgeSettings()
    api: ApiSettings = ApiSettings()
    auth: AuthSettings = AuthSettings()
    dashboard: DashboardSettings = DashboardSettings()
    jobs: JobsSettings = JobsSettings()
    compaction: CompactionSettings = CompactionSettings()
    status: StatusSettings = StatusSettings()
    alerts: AlertsSettings = AlertsSettings()
    etl: EtlSettings = EtlSettings()
    time: TimeSettings = TimeSettings()
    rollups: RollupSettings = RollupSettings()
    aqi: AqiSettings = AqiSettings()
    energy: EnergySettings = EnergySettings()
    quality: QualitySettings = QualitySettings()
    metrics: dict[str, ExtraMetric] = Field(
        default_factory=dict, description="Extra metrics beyond the built-in catalog.")
    device_types: dict[str, DeviceTypeSettings] = Field(
        default_factory=dict, description="Per device type: payload codec and field maps.")
    codecs: CodecSettings = CodecSettings()
    lorawan: LorawanSettings = LorawanSettings()
    line_protocol: LineProtocolSettings = LineProtocolSettings()
    sensor_community: SensorCommunitySettings = SensorCommunitySettings()

    _toml_file: Path | None = None

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = _config_file_in_use()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    def path(self, *parts: str) -> Path:
        """A path inside the data folder (created on demand by its owner)."""
        return self.data_dir.joinpath(*parts)


_explicit_config: Path | None = None


def _config_file_in_use() -> Path | None:
    if _explicit_config is not None:
        return _explicit_config
    env = os.environ.get(f"{ENV_PREFIX}CONFIG")
    if env:
        return Path(env)
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.exists() else None


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings from file + environment + `overrides` (flags; None values are ignored)."""
    global _explicit_config
    if config_file is not None and not config_file.exists():
        raise ConfigError(
            f"config file {config_file} does not exist: create it (see docs/configuration.md) "
            "or drop --config")
    _explicit_config = config_file
    try:
        given = {k: v for k, v in overrides.items() if v is not None}
        return Settings(**given)
    except ValueError as exc:
        raise ConfigError(f"invalid settings: {exc}") from exc
    finally:
        _explicit_config = None


def describe_sources(settings: Settings, config_file: Path | None = None,
                     overrides: dict[str, Any] | None = None) -> list[tuple[str, Any, str]]:
    """(dotted name, value, where it came from) for every leaf setting."""
    file = config_file or _config_file_in_use()
    file_data: dict[str, Any] = {}
    if file is not None and file.exists():
        file_data = tomllib.loads(file.read_text())
    given = {k for k, v in (overrides or {}).items() if v is not None}
    rows: list[tuple[str, Any, str]] = []

    def walk(model: BaseModel, prefix: list[str], file_part: dict[str, Any]) -> None:
        for name, info in type(model).model_fields.items():
            key = info.alias or name
            value = getattr(model, name)
            path = [*prefix, key]
            if isinstance(value, BaseModel):
                walk(value, path, file_part.get(key, {}) if isinstance(file_part, dict) else {})
                continue
            env_name = ENV_PREFIX + "__".join(p.upper() for p in path)
            if isinstance(value, dict):
                value = {k: v.model_dump() if isinstance(v, BaseModel) else v
                         for k, v in value.items()}
            if not prefix and name in given and not os.environ.get(env_name):
                origin = "command line"
            elif os.environ.get(env_name):
                origin = f"env {env_name}"
            elif isinstance(file_part, dict) and key in file_part:
                origin = f"file {file}"
            else:
                origin = "default"
            rows.append((".".join(path), value, origin))

    walk(settings, [], file_data)
    return rows
