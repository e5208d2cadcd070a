"""Helpers shared by the benchmark scripts: a server subprocess, results appended to RESULTS.md."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
STATUS_POLL_SECONDS = 0.1
"""How often a benchmark asks /api/v1/status whether everything is stored. One status call
costs the server about 2.5 ms of CPU: polling every 20 ms took 12 % of a core from the
pipeline under test. Every 100 ms costs 2.5 % and can end a run up to 0.1 s late, which
only lowers the figure. The benchmark asks on one kept-alive connection: `httpx.get` builds
a client (and its TLS context) per call, 44 ms of CPU each, which at 10 calls a second took
over 40 % of a core until 2026-12-02 16:00."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, check=True,
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=HERE, capture_output=True, text=True).stdout.strip()
        return out + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def append_results(title: str, command: str, rows: list[tuple[str, str]]) -> None:
    """Print the figures and append them, dated, with the commit, to bench/RESULTS.md."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"\n## {title} — {stamp}, commit {commit()}\n", f"`{command}` on {os.cpu_count()} "
             f"cores, Python {sys.version.split()[0]}\n", "| figure | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nEach run appends its figures here "
                           "(date, commit, command). Newest last.\n")
    with RESULTS.open("a") as f:
        f.write(text)


class Server:
    """`sensorlake up` in a subprocess on a data folder, stopped gracefully."""

    def __init__(self, data_dir: Path, port: int, env: dict[str, str] | None = None) -> None:
        self.data_dir, self.port = data_dir, port
        self.url = f"http://127.0.0.1:{port}"
        exe = Path(sys.executable).parent / "sensorlake"
        self.log = open(data_dir.parent / f"server-{port}.log", "w")  # noqa: SIM115
        self.http = httpx.Client(timeout=10)
        self.proc = subprocess.Popen(
            [str(exe), "up", "--data-dir", str(data_dir), "--port", str(port)],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if self.http.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited; see {self.log.name}")
            time.sleep(0.1)
        raise RuntimeError("server did not become healthy in 60 s")

    def status(self, token: str) -> dict:
        return self.http.get(f"{self.url}/api/v1/status",
                             headers={"Authorization": f"Bearer {token}"}).json()

    def wait_drained(self, token: str, timeout: float = 600) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status(token)
            if status["worker"]["processed_offset"] >= status["log"]["last_offset"]:
                return status
            time.sleep(STATUS_POLL_SECONDS)
        raise RuntimeError("worker did not drain the log in time")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=120)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.log.close()
            self.http.close()
