"""Helpers for end-to-end tests: the `sensorlake` console script as a subprocess, a free port,
and `sensorlake up` as a child process that can be killed -9, restarted and stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import httpx

SENSORLAKE = str(Path(sys.executable).parent / "sensorlake")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cli_env(**extra: str) -> dict[str, str]:
    """The test's environment (SENSORLAKE_* already removed by conftest) plus `extra`."""
    return {**os.environ, **extra}


def run_cli(*args: str | Path, timeout: float = 60, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `sensorlake ARGS...`; subprocess.run kills it if it outlives `timeout`."""
    return subprocess.run([SENSORLAKE, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env or cli_env(), cwd=cwd)


class Server:
    """`sensorlake up --data-dir D --port P` as a child process, output appended to a log."""

    def __init__(self, data_dir: Path, port: int, log_path: Path,
                 env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.env = env or cli_env()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.starts = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60) -> None:
        """Start and wait until /healthz answers 200 (ingest, worker and stores are up)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _reaped()
        self._log.write(f"--- start #{self.starts + 1} ---\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(
            [SENSORLAKE, "up", "--data-dir", str(self.data_dir), "--port", str(self.port)],
            stdout=self._log, stderr=subprocess.STDOUT, env=self.env)
        self.starts += 1
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"sensorlake up exited with {self.proc.returncode}:\n"
                                     f"{self.output()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"sensorlake up not healthy after {timeout}s:\n"
                                     f"{self.output()}")
            time.sleep(0.1)

    def kill9(self) -> None:
        """SIGKILL and reap (a zombie would still look alive to the next `up`)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._reaped()

    def stop(self, timeout: float = 90) -> int:
        """SIGTERM (graceful: the worker flushes the lake and acks) and wait for the exit."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            self.cleanup()
        return code

    def cleanup(self) -> None:
        """Kill the process if it still runs (teardown of a failed test)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._reaped()

    def _reaped(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def output(self) -> str:
        if self._log is not None:
            self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""
