"""Sinks and the query layer: hot store, Parquet lake, quarantine."""
