"""Ingest: bytes from devices -> the durable log, then acknowledge the sender. Never decodes
beyond what authorization needs (the device a message claims to be)."""
