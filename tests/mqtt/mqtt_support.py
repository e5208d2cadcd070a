"""A Mosquitto of the test's own: a generated config (auth + ACL) on a free port, a process
that can be killed -9 and restarted on the same persistence folder; and small paho helpers."""

from __future__ import annotations

import getpass
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import orjson
from paho.mqtt.client import Client

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from e2e_support import free_port

from sensorlake.catalog import Catalog
from sensorlake.config import Settings
from sensorlake.ingest import mqtt_client
from sensorlake.ingest.mosquitto_config import BrokerOptions, generate
from services import require_binary


class Broker:
    """`mosquitto -c OUT/mosquitto.conf` as configured by `sensorlake mosquitto-config`."""

    def __init__(self, workdir: Path, settings: Settings, tenant: str = "default",
                 port: int | None = None) -> None:
        self.binary = require_binary("mosquitto", "/usr/sbin/mosquitto")
        self.out = workdir / "broker"
        self.settings = settings
        self.tenant = tenant
        self.port = port or free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.starts = 0

    def configure(self, **options: Any) -> None:
        """(Re)generate config, passwords and ACL from the registry."""
        user = getpass.getuser() if os.geteuid() == 0 else None
        catalog = Catalog(self.settings.path("catalog.db"))
        try:
            generate(self.settings, catalog, self.out, self.tenant,
                     BrokerOptions(port=self.port, user=user, **options))
        finally:
            catalog.close()

    def start(self, timeout: float = 20) -> None:
        assert self.proc is None or self.proc.poll() is not None
        self._log = open(self.out / "mosquitto.log", "ab")  # noqa: SIM115 - closed in _reaped
        self.proc = subprocess.Popen([self.binary, "-c", str(self.out / "mosquitto.conf")],
                                     stdout=self._log, stderr=subprocess.STDOUT)
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mosquitto exited: {self.output()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"mosquitto not listening after {timeout}s: {self.output()}")

    def reload(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=30)
        self._reaped()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._reaped()

    def _reaped(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def output(self) -> str:
        try:
            return (self.out / "mosquitto.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""


class Device:
    """A device's own paho client (username = device id, password = its token), collecting
    the watermarks published on its ack topic."""

    def __init__(self, broker: Broker, device: str, password: str | None,
                 protocol: str = "5") -> None:
        self.device = device
        self.watermark = 0
        self.connected = threading.Event()
        self.refused: str | None = None
        self.connects = 0
        self.client = mqtt_client.make_client(f"dev-{device}-{os.getpid()}", protocol,
                                              persistent=False)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        broker_url = mqtt_client.parse_broker_url(broker.url)
        mqtt_client.start(self.client, broker_url, device if password else None, password,
                          protocol, persistent=False)

    def _on_connect(self, client: Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            self.refused = str(reason)
            client.disconnect()
            return
        client.subscribe(f"sensorlake/{self.device}/ack", 1)
        self.connects += 1
        self.connected.set()

    def _on_message(self, client: Client, userdata: Any, msg: Any) -> None:
        self.watermark = max(self.watermark, orjson.loads(msg.payload)["watermark"])

    def publish(self, topic: str, body: dict | bytes) -> None:
        payload = body if isinstance(body, bytes) else orjson.dumps(body)
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def wait_watermark(self, seq: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.watermark < seq:
            assert time.monotonic() < deadline, f"{self.device}: watermark {self.watermark}"
            time.sleep(0.02)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
