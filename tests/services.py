"""Real services for the tests that need them: skip with a reason on a developer's machine
without the service, fail under CI=true (where every service must be up).

    from services import require_service, require_binary, unique_name
    require_service("PostgreSQL", 5432)      # at the top of a test or fixture
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid

import pytest

START_HINTS = {
    "PostgreSQL": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    "Mosquitto": "mosquitto -d -c /etc/mosquitto/mosquitto.conf",
    "NATS": "start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- "
            "-a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server",
}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _missing(reason: str) -> None:
    if in_ci():
        pytest.fail(f"{reason} (CI=true: every service must be running)")
    pytest.skip(reason)


def require_service(name: str, port: int, host: str = "127.0.0.1") -> None:
    """Skip (or fail under CI) unless something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError as exc:
        hint = START_HINTS.get(name, "")
        _missing(f"{name} is not reachable on {host}:{port} ({exc})"
                 + (f"; start it with: {hint}" if hint else ""))


def require_binary(name: str, *candidates: str) -> str:
    """The path of an executable (PATH, then `candidates`), or skip/fail."""
    for path in (shutil.which(name), *candidates):
        if path and os.access(path, os.X_OK):
            return path
    _missing(f"the {name} executable is not installed")
    raise AssertionError("unreachable")


def unique_name(prefix: str) -> str:
    """A name no other test run uses (schema, stream, topic prefix, bucket)."""
    return f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
