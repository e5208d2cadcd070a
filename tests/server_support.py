"""Helpers for server-profile tests: a private PostgreSQL schema, JetStream stream and
nats-server processes, all removed at teardown."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
from pydantic import SecretStr

from sensorlake.config import JetStreamSettings, PostgresSettings, S3Settings
from services import require_binary, require_service, unique_name

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
NATS_URL = "nats://127.0.0.1:4222"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def drop_schema(name: str, dsn: str = PG_DSN) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@contextlib.contextmanager
def pg_schema(prefix: str = "slk") -> Iterator[PostgresSettings]:
    """PostgresSettings on a schema of its own in the shared server, dropped afterwards."""
    require_service("PostgreSQL", 5432)
    name = unique_name(prefix).lower()
    try:
        yield PostgresSettings(dsn=SecretStr(PG_DSN), schema_name=name, pool_size=2)
    finally:
        drop_schema(name)


def jetstream_settings(servers: list[str] | None = None, **kw: object) -> JetStreamSettings:
    """JetStreamSettings on a stream, subjects and consumer no other run uses."""
    name = unique_name("SLK").replace("-", "_")
    return JetStreamSettings(servers=servers or [NATS_URL], stream=name,
                             subject_prefix=f"slk.{name}", consumer="workers", **kw)


class NatsServer:
    """A `nats-server -js` of our own on a free port with its own store folder."""

    def __init__(self, folder: Path, port: int | None = None, name: str = "n1",
                 cluster_port: int | None = None, routes: list[int] | None = None,
                 cluster: str = "slk") -> None:
        self.binary = require_binary("nats-server", "/usr/sbin/nats-server")
        self.folder, self.name = folder, name
        self.port = port or free_port()
        self.cluster_port, self.routes, self.cluster = cluster_port, routes or [], cluster
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        args = [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js",
                "-sd", str(self.folder / "store"), "-n", self.name]
        if self.cluster_port:
            args += ["--cluster_name", self.cluster,
                     "--cluster", f"nats://127.0.0.1:{self.cluster_port}",
                     "--routes", ",".join(f"nats://127.0.0.1:{p}" for p in self.routes)]
        log = open(self.folder / f"{self.name}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=0.5):
                return self
            time.sleep(0.05)
        raise AssertionError(f"nats-server {self.name} did not listen on {self.port}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


class MotoServer:
    """`moto_server` (an S3 endpoint) on a free port, as a subprocess."""

    def __init__(self, folder: Path) -> None:
        import sys
        here = Path(sys.executable).parent / "moto_server"
        self.binary = require_binary("moto_server", str(here))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.folder = folder
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> MotoServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        log = open(self.folder / "moto.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([self.binary, "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=0.5):
                return self
            time.sleep(0.1)
        raise AssertionError("moto_server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)


def s3_settings(endpoint: str, bucket: str | None = None) -> S3Settings:
    return S3Settings(bucket=bucket or unique_name("slk").lower().replace("_", "-"),
                      prefix="lake", endpoint_url=endpoint, region="us-east-1",
                      access_key_id="test", secret_access_key=SecretStr("test"))


def delete_stream(settings: JetStreamSettings) -> None:
    """Delete a test's stream and its KV buckets (consumers, marks, process board)."""
    import asyncio

    import nats

    async def work() -> None:
        nc = await nats.connect(settings.servers, connect_timeout=2, max_reconnect_attempts=1)
        js = nc.jetstream()
        for delete, name in ((js.delete_stream, settings.stream),
                             (js.delete_key_value, settings.stream + "_consumers"),
                             (js.delete_key_value, settings.stream + "_marks"),
                             (js.delete_key_value, settings.stream + "_processes")):
            with contextlib.suppress(Exception):
                await delete(name)
        await nc.close()
    with contextlib.suppress(Exception):
        asyncio.run(work())
