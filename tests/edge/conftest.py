"""Edge fixtures: `sensorlake up` servers (tests/e2e/e2e_support.py), killed at teardown."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., object]]:
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
