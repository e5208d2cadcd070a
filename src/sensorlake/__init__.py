"""sensorlake: sensor readings from devices to dashboards and a Parquet lake, without loss."""

__version__ = "0.1.0"
