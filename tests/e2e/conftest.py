"""End-to-end fixtures: `sensorlake up` servers that are always killed at teardown."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from e2e_support import Server, cli_env, free_port


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Server factory; every server it made is killed at teardown, whatever happened."""
    servers: list[Server] = []

    def build(data_dir: Path, port: int | None = None, **env: str) -> Server:
        server = Server(data_dir, port or free_port(),
                        tmp_path / f"server-{len(servers)}.log", cli_env(**env))
        servers.append(server)
        return server

    yield build
    for server in servers:
        server.cleanup()
