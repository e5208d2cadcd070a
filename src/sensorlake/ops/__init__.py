"""Operating sensorlake: status, Prometheus metrics, alerts, jobs, imports, replay, cost."""
