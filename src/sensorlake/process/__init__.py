"""Batch stages: `process(batch, ctx) -> batch` on Arrow tables."""
