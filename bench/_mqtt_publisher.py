"""A lean MQTT 3.1.1 QoS 1 load generator for the benchmarks: pre-encoded PUBLISH packets,
written in chunks on one connection per device, with a window of unacknowledged messages.

`mosquitto_pub -l` spends about 20 µs of CPU per message (measured from /proc during
bench/mqtt_ingest.py), a fifth of what two cores have for publisher, broker and sensorlake
together. This one spends well under 1 µs, so the figures measure the broker and the
service rather than the load generator. The broker still sees real clients: each
connection authenticates as its device and publishes on its own topic, QoS 1, and every
message is PUBACKed by the broker before it leaves the window.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterable, Sequence

from sensorlake.ingest.mqtt_wire import connect_packet, publish_packet

PUBACK = b"\x40\x02"


def publish_packets(topic: str, payloads: Iterable[bytes]) -> list[bytes]:
    """One QoS 1 PUBLISH per payload, packet ids 1..65535 in turn."""
    return [publish_packet(topic, payload, 1, k % 65535 + 1) for k, payload in enumerate(payloads)]


class DeviceConnection:
    """One device's connection: its pre-encoded packets and how many are sent and acked."""

    def __init__(self, port: int, device: str, token: str, payloads: Sequence[bytes]) -> None:
        self.device = device
        self.packets = publish_packets(f"sensorlake/{device}/up", payloads)
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(connect_packet(device, device, token))
        connack = b""
        while len(connack) < 4:
            got = self.sock.recv(4 - len(connack))
            if not got:
                raise ConnectionError(f"{device}: broker closed the connection at CONNECT")
            connack += got
        if connack[0] != 0x20 or connack[3] != 0:
            raise ConnectionError(f"{device}: CONNACK {connack.hex()} (bad credentials?)")
        self.sent = self.acked = 0
        self._pending = b""

    @property
    def done(self) -> bool:
        return self.acked >= len(self.packets)

    def read_acks(self) -> None:
        """Count the PUBACKs waiting on the socket, without blocking."""
        while True:
            try:
                got = self.sock.recv(1 << 16, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            if not got:
                raise ConnectionError(f"{self.device}: broker closed the connection")
            data = self._pending + got
            whole = len(data) // 4 * 4
            if data[:whole].count(PUBACK) != whole // 4:
                raise ConnectionError(f"{self.device}: unexpected packet {data[:8].hex()}")
            self._pending = data[whole:]
            self.acked += whole // 4

    def send_window(self, window: int) -> None:
        """Send what the window allows (blocking: the broker reads on)."""
        room = min(window - (self.sent - self.acked), len(self.packets) - self.sent)
        if room > 0:
            self.sock.sendall(b"".join(self.packets[self.sent:self.sent + room]))
            self.sent += room

    def close(self) -> None:
        try:
            self.sock.sendall(b"\xe0\x00")  # DISCONNECT
        finally:
            self.sock.close()


class Publishers(threading.Thread):
    """Every device's connection, served by one thread on a short tick: each tick reads the
    PUBACKs that arrived and sends what each window allows. A tick of a few milliseconds lets
    PUBACKs gather, so one recv takes many of them."""

    def __init__(self, port: int, devices: dict[str, tuple[str, Sequence[bytes]]],
                 window: int = 500, tick: float = 0.002) -> None:
        super().__init__(daemon=True, name="mqtt-publishers")
        self.connections = [DeviceConnection(port, device, token, payloads)
                            for device, (token, payloads) in devices.items()]
        self.window, self.tick = window, tick
        self.error: BaseException | None = None
        self.started = self.elapsed = 0.0

    def run(self) -> None:
        try:
            while not all(c.done for c in self.connections):
                for connection in self.connections:
                    connection.read_acks()
                    connection.send_window(self.window)
                time.sleep(self.tick)
            self.elapsed = time.perf_counter() - self.started
        except BaseException as exc:  # reported by join
            self.error = exc

    def start(self) -> Publishers:  # type: ignore[override]
        self.started = time.perf_counter()
        super().start()
        return self

    def join(self, timeout: float | None = 600) -> float:  # type: ignore[override]
        """Seconds from start until the broker acknowledged every message."""
        super().join(timeout)
        if self.is_alive() or self.error is not None:
            raise RuntimeError(f"publishers: {self.error or 'timed out'}")
        for connection in self.connections:
            connection.close()
        return self.elapsed
