"""Server profile: separate roles on NATS JetStream, PostgreSQL and S3."""
