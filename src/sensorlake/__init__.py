"""sensorlake: sensor readings from devices to dashboards and a Parquet lake, zero loss, no duplicates."""

__version__ = "0.1.0"
