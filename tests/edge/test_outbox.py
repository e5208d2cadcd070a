"""The outbox: durable group commits, seqs given at sealing, deletion only at or below the
watermark, a full outbox that rejects or drops the oldest (counted), and kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import orjson
import pytest

from sensorlake.edge import Outbox, OutboxFull

T0 = 1_795_435_200_000_000


def sets(n: int, start: int = 0) -> list[tuple[int, dict[str, float]]]:
    return [(T0 + (start + i) * 1_000_000, {"pm2_5": float(start + i), "pm10": 1.0})
            for i in range(n)]


def test_seal_confirm_and_delete_only_at_or_below_the_watermark(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as outbox:
        outbox.append_many("d1", sets(250))
        first = outbox.seal("d1", 100)
        second = outbox.seal("d1", 100)
        assert first and second and (first.seq, second.seq) == (1, 2)
        doc = orjson.loads(first.body)
        assert doc["device"] == "d1" and doc["seq"] == 1 and len(doc["batch"]) == 100
        assert doc["batch"][0] == {"ts": T0 // 1000, "readings": {"pm2_5": 0.0, "pm10": 1.0}}
        assert outbox.confirm("d1", 1) == 100
        assert [m.seq for m in outbox.unconfirmed("d1")] == [2]
        assert outbox.unconfirmed("d1")[0].body == second.body  # resent byte for byte
        (status,) = outbox.status()
        assert status["backlog"] == 150 and status["pending"] == 50
        assert status["watermark"] == 1 and status["confirmed"] == 100
        assert outbox.confirm("d1", 1) == 0  # an old watermark changes nothing


def test_a_watermark_beyond_the_outbox_moves_unconfirmed_messages_above_it(
        tmp_path: Path) -> None:
    """A fresh outbox for a device the server already knows: its seqs must not collide."""
    with Outbox(tmp_path / "o.db") as outbox:
        outbox.append_many("d1", sets(30))
        assert outbox.seal("d1", 10).seq == 1
        assert outbox.seal("d1", 10).seq == 2
        assert outbox.confirm("d1", 40) == 0  # the server's watermark from an earlier life
        assert [m.seq for m in outbox.unconfirmed("d1")] == [41, 42]
        assert orjson.loads(outbox.unconfirmed("d1")[0].body)["seq"] == 41
        assert outbox.seal("d1", 10).seq == 43


def test_full_outbox_rejects_with_a_clear_error(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", max_bytes=20_000) as outbox:
        outbox.append_many("d1", sets(200))
        with pytest.raises(OutboxFull, match=r"is full .* --when-full drop-oldest"):
            outbox.append_many("d1", sets(200, 200))
        assert outbox.status()[0]["backlog"] == 200


def test_full_outbox_drops_the_oldest_counts_and_reports(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", max_bytes=20_000, when_full="drop-oldest") as outbox:
        for chunk in range(10):
            outbox.append_many("d1", sets(100, chunk * 100))
        (status,) = outbox.status()
        assert status["dropped"] > 0 and status["dropped_readings"] == 2 * status["dropped"]
        assert status["backlog"] + status["dropped"] == 1000
        assert outbox.stored_bytes <= 20_000
        oldest = orjson.loads(outbox.seal("d1", 1).body)["batch"][0]["readings"]["pm2_5"]
        assert oldest == status["dropped"]  # exactly the oldest ones went


def test_append_throughput_is_durable_and_fast(tmp_path: Path) -> None:
    """Floor (quiet machine): >= 50,000 readings/s; here a loose bound for a loaded CI."""
    readings = {f"m{i}": float(i) for i in range(10)}
    with Outbox(tmp_path / "o.db") as outbox:
        started = time.perf_counter()
        for chunk in range(20):
            outbox.append_many("d1", [(T0 + (chunk * 1000 + i) * 1000, readings)
                                      for i in range(1000)])
        rate = 200_000 / (time.perf_counter() - started)
    assert rate > 10_000, f"{rate:,.0f} readings/s"


def test_concurrent_appends_share_commits(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as outbox:
        threads = [threading.Thread(target=lambda d=d: [outbox.append(d, {"pm2_5": 1.0},
                                                                      T0 + i) for i in range(200)])
                   for d in ("a", "b", "c", "d")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(s["backlog"] for s in outbox.status()) == [200] * 4


CHILD = textwrap.dedent("""
    import sys
    from sensorlake.edge import Outbox
    outbox = Outbox(sys.argv[1])
    n = 0
    while True:
        outbox.append_many("d1", [(1_795_435_200_000_000 + (n + i) * 1000, {"pm2_5": 1.0})
                                  for i in range(50)])
        n += 50
        if n % 500 == 0:
            outbox.seal("d1", 120)
        print(n, flush=True)
""")


def test_survives_kill9_while_appending_and_sealing(tmp_path: Path) -> None:
    """Everything reported durable before SIGKILL is there, each set exactly once."""
    path = tmp_path / "o.db"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    durable = 0
    for line in proc.stdout:
        durable = int(line)
        if durable >= 3000:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with Outbox(path) as outbox:
        ts = [e["ts"] for m in outbox.unconfirmed("d1") for e in orjson.loads(m.body)["batch"]]
        while (message := outbox.seal("d1", 1000)) is not None:
            ts += [e["ts"] for e in orjson.loads(message.body)["batch"]]
        assert len(ts) == len(set(ts)) >= durable
        seqs = [m.seq for m in outbox.unconfirmed("d1")]
        assert seqs == list(range(1, len(seqs) + 1))
