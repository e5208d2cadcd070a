"""Settings of the server profile: the JetStream log, the PostgreSQL store, the S3 lake."""

from __future__ import annotations

from pydantic import Field, SecretStr

from sensorlake.config_base import Section


class JetStreamSettings(Section):
    """The server profile's log: one NATS JetStream stream and one durable pull consumer."""

    servers: list[str] = Field(
        ["nats://127.0.0.1:4222"], description="NATS server URLs (several for a cluster).")
    stream: str = Field("SENSORLAKE", description="Stream name (file storage).")
    subject_prefix: str = Field(
        "sensorlake.raw", description="Subjects are <prefix>.<tenant>.<device>.")
    consumer: str = Field("workers", description="Durable pull consumer shared by the workers.")
    replicas: int = Field(1, ge=1, le=5, description="Stream replicas (3 on a 3-node cluster).")
    duplicate_window_seconds: float = Field(
        120, gt=0, description="How long a Nats-Msg-Id is remembered for deduplication.")
    ack_wait_seconds: float = Field(
        30, gt=0, description="Redeliver a message not acknowledged within this time.")
    max_deliver: int = Field(
        10, ge=2, description="Deliveries after which a message goes to the quarantine.")
    max_ack_pending: int = Field(
        20000, gt=0, description="Most unacknowledged messages outstanding across workers.")
    fetch_messages: int = Field(
        5000, gt=0, description="Most messages a server worker fetches from JetStream and "
        "processes at once (and at most worker.batch_messages); keep workers x "
        "fetch_messages <= max_ack_pending.")
    publish_timeout_seconds: float = Field(
        5, gt=0, description="How long one publish waits for its PubAck.")
    publish_retry_seconds: float = Field(
        30, ge=0, description="How long ingest retries a publish (same msg id) before 503.")
    max_in_flight: int = Field(
        4096, gt=0, description="Most concurrent publishes awaiting their PubAck.")


class PostgresSettings(Section):
    """The server profile's hot store and quarantine."""

    dsn: SecretStr = Field(
        SecretStr("postgresql://postgres@127.0.0.1:5432/postgres"),
        description="libpq connection string (a password here is never printed).")
    schema_name: str = Field(
        "sensorlake", description="Schema holding sensorlake's tables.")
    partition_days: int = Field(1, ge=1, le=366, description="Days per readings partition.")
    connect_timeout_seconds: float = Field(
        5, gt=0, description="Connection timeout; statements fail over to retry after it.")
    pool_size: int = Field(4, ge=1, description="Connections kept for API queries.")


class S3Settings(Section):
    """The server profile's lake on an S3-compatible store (unset bucket: local lake)."""

    bucket: str | None = Field(None, description="Bucket of the lake; unset = <data_dir>/lake.")
    prefix: str = Field("", description="Key prefix inside the bucket.")
    endpoint_url: str | None = Field(
        None, description="Endpoint of an S3-compatible store (MinIO, Ceph); unset = AWS.")
    region: str = Field("us-east-1", description="Region name.")
    access_key_id: str | None = Field(
        None, description="Access key; unset = the AWS default credential chain.")
    secret_access_key: SecretStr | None = Field(None, description="Secret key (never printed).")
