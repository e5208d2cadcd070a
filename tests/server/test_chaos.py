"""Chaos tests of the server profile: processes killed, paused and cut off while readings flow.

Each test runs its own `sensorlake run ingest` and `sensorlake run worker` processes on a
private stream, schema and data folder, sends readings with a client that retries every
request until it gets a 200, and then requires PostgreSQL and the lake to hold every reading
exactly once (and raw/ every log offset exactly once).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest
from stack import Plan, log_tail, stack

from server_support import NATS_URL, NatsServer, free_port
from services import in_ci, require_service

pytestmark = pytest.mark.slow


def test_workers_killed_every_two_seconds(tmp_path: Path) -> None:
    """3 workers, 20,000 readings; a random worker gets SIGKILL every 2 s and restarts."""
    require_service("NATS", 4222)
    plan = Plan(devices=10, messages=25, per_message=20)  # 250 messages x 80 readings
    bodies, expected = plan.bodies()
    assert len(expected) == 20_000
    with stack(tmp_path, [NATS_URL], batch_messages=10, flush=1) as s:
        token = s.prepare(plan)
        s.spawn("ingest")
        workers = [s.spawn("worker") for _ in range(3)]
        s.wait_http()
        done = threading.Event()
        kills = 0

        def chaos() -> None:
            nonlocal kills
            rng = random.Random(7)
            while not done.wait(2.0):
                victim = rng.choice(workers)
                victim.signal(signal.SIGKILL)
                kills += 1
                victim.start()

        killer = threading.Thread(target=chaos, daemon=True)
        killer.start()
        random.Random(1).shuffle(bodies)
        t0 = time.monotonic()
        s.send(token, bodies, rate=25)
        print("sent after", time.monotonic() - t0)
        time.sleep(4)  # keep killing while the backlog drains and the lake is written
        done.set()
        killer.join()
        assert kills >= 5, kills
        s.assert_exact(expected)
        print("checked after", time.monotonic() - t0)


class FaultProxy:
    """A TCP proxy to PostgreSQL that can be cut: `down()` closes every connection and
    refuses new ones (closes them at once) until `up()`."""

    def __init__(self, target_port: int = 5432) -> None:
        import socket
        self.target = target_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.is_down = False
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.refused = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            with self.lock:  # decided and registered atomically with respect to down()
                if self.is_down:
                    self.refused += 1
                    client.close()
                    continue
                try:
                    upstream = socket.create_connection(("127.0.0.1", self.target))
                except OSError:
                    client.close()
                    continue
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src, dst) -> None:  # type: ignore[no-untyped-def]
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.close()

    def down(self) -> None:
        import socket
        with self.lock:
            self.is_down = True
            conns, self.conns = self.conns, []
        for sock in conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            except OSError:
                pass

    def up(self) -> None:
        self.is_down = False

    def close(self) -> None:
        self.down()
        self.server.close()


def test_postgres_unreachable(tmp_path: Path) -> None:
    """PostgreSQL cut off for PG_OUTAGE_SECONDS (60 by default, 20 under CI=true to keep the
    suite short): ingest keeps answering 200, workers wait without exiting, then the backlog
    drains at >= 3x the ingest rate and nothing is lost."""
    require_service("NATS", 4222)
    outage = float(os.environ.get("PG_OUTAGE_SECONDS", "20" if in_ci() else "60"))
    proxy = FaultProxy()
    rate = 20.0  # requests/s, 40 readings each
    plan = Plan(devices=10, messages=max(4, int(rate * (outage + 8) / 10)), per_message=10)
    bodies, expected = plan.bodies()
    try:
        with stack(tmp_path, [NATS_URL], pg_port=proxy.port, batch_messages=200) as s:
            token = s.prepare(plan)
            s.spawn("ingest")
            workers = [s.spawn("worker") for _ in range(2)]
            s.wait_http()
            marks: dict[str, float] = {}

            def outage_window() -> None:
                """Cut, restore, then time how long the backlog takes to drain."""
                time.sleep(3.0)
                marks["cut_offset"] = s.stream_last()
                proxy.down()
                time.sleep(outage)
                marks["restore_offset"] = backlog = s.stream_last()
                proxy.up()
                restored = time.monotonic()
                with s.pg() as conn:
                    while time.monotonic() - restored < 120:
                        done = conn.execute("SELECT (SELECT count(*) FROM processed WHERE "
                                            "log_offset > exported) + exported FROM "
                                            "lake_export").fetchone()[0]
                        if done >= backlog:
                            marks["drain_seconds"] = time.monotonic() - restored
                            return
                        time.sleep(0.05)

            cutter = threading.Thread(target=outage_window, daemon=True)
            cutter.start()
            counts = s.send(token, bodies, rate=rate, deadline=outage + 120)
            cutter.join()
            assert counts["errors_503"] == 0, counts  # ingest never refused a request
            assert all(w.alive and w.starts == 1 for w in workers), log_tail(workers)
            assert "drain_seconds" in marks, "the backlog did not drain"
            ingest_rate = (marks["restore_offset"] - marks["cut_offset"]) / outage
            drain_rate = marks["restore_offset"] / max(marks["drain_seconds"], 0.05)
            print(f"outage {outage:g} s: ingest {ingest_rate:.1f} msg/s during it, backlog "
                  f"{marks['restore_offset']:g} drained in {marks['drain_seconds']:.2f} s "
                  f"({drain_rate:.0f} msg/s)")
            assert ingest_rate > 0 and drain_rate >= 3 * ingest_rate, marks
            assert proxy.refused > 0  # the workers did try to reconnect
            s.assert_exact(expected)
            for w in workers:
                assert "Traceback" not in w.output(), w.output()
    finally:
        proxy.close()


def test_nats_restarted_mid_run(tmp_path: Path) -> None:
    """Our own nats-server is killed and restarted while ingest publishes: the publishers
    retry with the same msg ids, nothing is lost or stored twice."""
    nats_server = NatsServer(tmp_path / "nats").start()
    plan = Plan(devices=5, messages=40, per_message=5)
    bodies, expected = plan.bodies()
    try:
        with stack(tmp_path, [nats_server.url], batch_messages=50) as s:
            token = s.prepare(plan)
            s.spawn("ingest")
            s.spawn("worker")
            s.wait_http()

            def restart() -> None:
                time.sleep(2.0)
                nats_server.kill(signal.SIGKILL)
                time.sleep(2.0)
                nats_server.start()

            t = threading.Thread(target=restart, daemon=True)
            t.start()
            s.send(token, bodies, rate=40, deadline=90)
            t.join()
            s.assert_exact(expected)
    finally:
        nats_server.kill()


def test_paused_worker_redelivery_is_not_a_duplicate(tmp_path: Path) -> None:
    """A worker SIGSTOPped past ack_wait: its messages go to the other worker; when it
    resumes and commits the same batch, nothing is stored twice."""
    require_service("NATS", 4222)
    plan = Plan(devices=5, messages=40, per_message=5)
    bodies, expected = plan.bodies()
    with stack(tmp_path, [NATS_URL], ack_wait=2, batch_messages=20) as s:
        token = s.prepare(plan)
        s.spawn("ingest")
        paused, other = s.spawn("worker"), s.spawn("worker")
        s.wait_http()

        def pause() -> None:
            time.sleep(2.0)
            paused.signal(signal.SIGSTOP)
            time.sleep(6.0)  # three ack_waits
            paused.signal(signal.SIGCONT)

        t = threading.Thread(target=pause, daemon=True)
        t.start()
        s.send(token, bodies, rate=30)
        t.join()
        s.assert_exact(expected)
        assert other.alive and paused.alive
        assert _redelivered([NATS_URL], s.stream) > 0  # the pause did cause redeliveries


def test_three_node_cluster_survives_a_node(tmp_path: Path) -> None:
    """A 3-node JetStream cluster on loopback, stream replicas 3; one node is killed
    mid-run: nothing acknowledged is lost."""
    ports = [free_port() for _ in range(3)]
    routes = [free_port() for _ in range(3)]
    nodes = [NatsServer(tmp_path / f"n{i}", ports[i], f"n{i}", routes[i], routes)
             for i in range(3)]
    for node in nodes:
        node.start()
    plan = Plan(devices=5, messages=40, per_message=5)
    bodies, expected = plan.bodies()
    try:
        _wait_cluster([n.url for n in nodes])
        with stack(tmp_path, [n.url for n in nodes], replicas=3, batch_messages=50) as s:
            token = s.prepare(plan)
            s.spawn("ingest")
            s.spawn("worker")
            s.wait_http(timeout=90)

            killed: list[str] = []

            def kill_one() -> None:
                """Kill the node that leads the stream (the worst one to lose)."""
                time.sleep(2.0)
                leader = _stream_leader([n.url for n in nodes], s.stream)
                victim = next((n for n in nodes if n.name == leader), nodes[0])
                victim.kill(signal.SIGKILL)
                killed.append(victim.name)

            t = threading.Thread(target=kill_one, daemon=True)
            t.start()
            s.send(token, bodies, rate=40, deadline=120)
            t.join()
            assert killed
            s.nats_urls = [n.url for n in nodes if n.name not in killed]
            s.assert_exact(expected)
    finally:
        for node in nodes:
            node.kill()


def _redelivered(urls: list[str], stream: str) -> int:
    import asyncio

    import nats

    async def probe() -> int:
        nc = await nats.connect(urls, connect_timeout=2)
        try:
            info = await nc.jetstream().consumer_info(stream, "workers")
            # every delivery takes a consumer sequence: more of them than stream messages
            # delivered means some were delivered again
            return int(info.delivered.consumer_seq) - int(info.delivered.stream_seq)
        finally:
            await nc.close()
    return asyncio.run(probe())


def _stream_leader(urls: list[str], stream: str) -> str | None:
    import asyncio

    import nats

    async def probe() -> str | None:
        nc = await nats.connect(urls, connect_timeout=2)
        try:
            info = await nc.jetstream().stream_info(stream)
            return info.cluster.leader if info.cluster else None
        finally:
            await nc.close()
    try:
        return asyncio.run(probe())
    except Exception:
        return None


def _wait_cluster(urls: list[str], timeout: float = 60) -> None:
    """Until the cluster has a JetStream meta leader (a stream can be created)."""
    import asyncio

    import nats

    async def probe() -> bool:
        nc = await nats.connect(urls, connect_timeout=2)
        try:
            info = await nc.jetstream().account_info()
            return info is not None
        except Exception:
            return False
        finally:
            await nc.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if asyncio.run(probe()):
                return
        except Exception:
            pass
        time.sleep(0.5)
    raise AssertionError("the NATS cluster did not elect a JetStream leader")
