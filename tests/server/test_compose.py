"""compose.server.yml (no Docker engine here): it parses, every role is a `sensorlake run`
command that exists, and its SENSORLAKE_* variables are valid settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sensorlake.config import load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_compose_file_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    compose = yaml.safe_load((ROOT / "compose.server.yml").read_text())
    services = compose["services"]
    assert {"nats-1", "nats-2", "nats-3", "postgres", "minio", "ingest", "worker",
            "api", "scheduler"} <= set(services)
    roles = {name: svc["command"] for name, svc in services.items()
             if svc.get("image", "").startswith("sensorlake")}
    assert {tuple(cmd[:3]) for cmd in roles.values()} == {
        ("sensorlake", "run", "ingest"), ("sensorlake", "run", "worker"),
        ("sensorlake", "run", "api"), ("sensorlake", "run", "scheduler")}
    for name in ("nats-1", "nats-2", "nats-3"):
        command = services[name]["command"]
        assert "-js" in command and "--routes" in command, name
    env = services["worker"]["environment"]
    for key, value in env.items():
        assert key.startswith("SENSORLAKE_"), key
        monkeypatch.setenv(key, str(value))
    settings = load_settings()
    assert settings.profile == "server" and settings.jetstream.replicas == 3
    assert len(settings.jetstream.servers) == 3 and settings.s3.bucket == "sensorlake-lake"
    assert services["worker"]["stop_grace_period"] == "60s"
