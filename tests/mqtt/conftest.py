"""MQTT fixtures: a Mosquitto of the test's own, always killed at teardown."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mqtt_support import Broker

from sensorlake.config import Settings


@pytest.fixture
def make_broker(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    brokers: list[Broker] = []

    def build(settings: Settings, **kwargs: object) -> Broker:
        broker = Broker(tmp_path / f"b{len(brokers)}", settings, **kwargs)  # type: ignore[arg-type]
        brokers.append(broker)
        return broker

    yield build
    for broker in brokers:
        broker.stop()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., object]]:
    """`sensorlake up` factory (see tests/e2e/e2e_support.py); killed at teardown."""
    from e2e_support import Server, cli_env, free_port

    servers: list[Server] = []

    def build(data_dir: Path, **env: str) -> Server:
        server = Server(data_dir, free_port(), tmp_path / f"server-{len(servers)}.log",
                        cli_env(**env))
        servers.append(server)
        return server

    yield build
    for server in servers:
        server.cleanup()
