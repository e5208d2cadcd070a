"""Pollers: sources sensorlake fetches from (they append to the log like any ingest)."""
