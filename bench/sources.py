"""Sources: decode throughput per codec, and InfluxDB line protocol end to end.

    python bench/sources.py [--messages 20000] [--lines 300000] [--batch 5000] [--connections 8]
                             [--shapes live,backfill] [--repeat 3]

1. Decode: each codec decodes `--messages` generated messages in this process with polars and
   DuckDB limited to one thread (readings/s on one core). The Python codec runs its child
   process, so its figure includes the round trip.
2. Line protocol end to end: `sensorlake up` in a subprocess on a fresh data folder; a load
   process posts `--lines` lines (3 fields each, gzip, `--batch` lines per request like
   Telegraf's metric_batch_size) to `/api/v2/write` over `--connections` keep-alive
   connections; timed from the first request until the worker has committed every line to
   the hot store (queryable). Two workloads (`--shapes`): "live", 1,000 devices at 1 Hz
   over the last 5 minutes, and "backfill", 50 devices every 50 s over 3.5 days (every
   reading in its own rollup minute, 84 lake hours per flush). Floor: 100,000 points
   (lines)/s. Each shape runs `--repeat` times on a fresh data folder and the median is the
   figure (every run listed: on a shared 2-core VM runs vary by +-20 %), with the server's
   CPU per line (all its threads, from /proc), which varies less.
3. The same requests to InfluxDB 1.6 (`influxd`, `apt-get install influxdb`) if installed:
   v1 `/write?db=bench&precision=ns`, timed until the last 204.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("POLARS_MAX_THREADS", "1")

import httpx
import orjson
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Server, append_results, free_port
from sensorlake.auth.tokens import Role, TokenStore
from sensorlake.catalog import Catalog
from sensorlake.config import load_settings
from sensorlake.decode import get_codec
from sensorlake.decode.context import configure_codecs
from sensorlake.log.base import LOG_ENTRY_SCHEMA
from sensorlake.model import TS_TYPE
from sensorlake.registry import Device, DeviceRegistry

DEVICES = 50
NOW_NS = time.time_ns()


def entries(payloads: list[bytes], codec: str) -> pa.Table:
    n = len(payloads)
    return pa.table({
        "offset": pa.array(range(1, n + 1), pa.int64()),
        "msg_id": [f"m{i}" for i in range(n)], "tenant": ["default"] * n,
        "device_id": [f"d{i % DEVICES}" for i in range(n)], "source": ["bench"] * n,
        "codec": [codec] * n,
        "received_at": pa.array([NOW_NS // 1000] * n, pa.int64()).cast(TS_TYPE),
        "seq": pa.nulls(n, pa.int64()), "payload": pa.array(payloads, pa.binary()),
    }, schema=LOG_ENTRY_SCHEMA)


def lpp(i: int) -> bytes:
    return bytes([1, 103]) + (200 + i % 50).to_bytes(2, "big") + bytes([2, 104, 80 + i % 40]) \
        + bytes([3, 2]) + (1000 + i % 900).to_bytes(2, "big")


def messages(kind: str, count: int) -> list[bytes]:
    out = []
    for i in range(count):
        data = base64.b64encode(lpp(i)).decode()
        if kind == "chirpstack":
            doc = {"deduplicationId": f"id-{i}", "time": "2026-11-23T12:00:00Z",
                   "deviceInfo": {"devEui": f"{i:016x}"}, "fPort": 1, "fCnt": i, "data": data,
                   "rxInfo": [{"rssi": -60 - i % 40, "snr": 7.5}]}
        elif kind == "tts":
            doc = {"end_device_ids": {"device_id": f"d{i % DEVICES}"},
                   "uplink_message": {"f_port": 1, "f_cnt": i, "frm_payload": data,
                                      "received_at": "2026-11-23T12:00:00Z",
                                      "rx_metadata": [{"rssi": -70, "snr": 5.0}]}}
        elif kind == "sensor_community":
            doc = {"timestamp": "2026-11-23 12:00:00",
                   "location": {"latitude": "52.1", "longitude": "5.1"},
                   "sensordatavalues": [{"value_type": "P1", "value": f"{i % 90}.5"},
                                        {"value_type": "P2", "value": f"{i % 40}.2"}]}
        elif kind == "airrohr":
            doc = {"esp8266id": str(i), "sensordatavalues": [
                {"value_type": "SDS_P1", "value": "12.3"}, {"value_type": "SDS_P2", "value": "4"},
                {"value_type": "BME280_pressure", "value": "100512"}]}
        else:
            out.append(lpp(i))
            continue
        out.append(orjson.dumps(doc))
    return out


def line_batch(start: int, count: int, devices: int = DEVICES, interval_s: float = 1.0,
               total: int = 300_000) -> bytes:
    """Points start..start+count of a run of `total`: point p is device p % devices at step
    p // devices, the steps `interval_s` apart and ending now (device d0 first, as a
    gateway or Telegraf agent flushing the latest interval of every device)."""
    steps = -(-total // devices)
    lines = []
    for p in range(start, start + count):
        ts = NOW_NS - int((steps - p // devices) * interval_s * 1e9)
        lines.append(f"air,device=d{p % devices},site=bench pm2_5={p % 300}.5,"
                     f"pm10={p % 400}.1,temperature={p % 30}.25 {ts}")
    return "\n".join(lines).encode()


def decode_rates(count: int, tmp: Path) -> list[tuple[str, str]]:
    settings = load_settings(data_dir=tmp / "decode")
    codecs = tmp / "decode" / "codecs"
    codecs.mkdir(parents=True)
    (codecs / "generic.py").write_text(
        "def decode_uplink(payload, f_port, variables):\n"
        "    return {'temperature': int.from_bytes(payload[2:4], 'big') / 10}\n")
    configure_codecs(settings)
    rows = []
    cases = [("cayenne_lpp", count), ("chirpstack", count), ("tts", count),
             ("sensor_community", count), ("airrohr", count), ("python", count)]
    for name, n in cases:
        table = entries(messages(name, n), name)
        get_codec(name).decode(table.slice(0, 50))  # warm up (imports, the codec child)
        start = time.perf_counter()
        batch = get_codec(name).decode(table)
        elapsed = time.perf_counter() - start
        rows.append((f"decode {name} (readings/s, one core)",
                     f"{batch.readings.num_rows / elapsed:,.0f} ({n:,} messages)"))
    payloads = [line_batch(k * 200, 200) for k in range(max(count * 5 // 200, 1))]
    table = entries(payloads, "line_protocol")
    codec = get_codec("line_protocol")
    codec.decode(table.slice(0, 5))
    for vectorize in (True, False):
        start = time.perf_counter()
        batch = codec.decode(table, vectorize=vectorize)  # type: ignore[call-arg]
        elapsed = time.perf_counter() - start
        path = "vectorized" if vectorize else "precise only"
        rows.append((f"decode line_protocol, {path} (lines/s, one core)",
                     f"{len(payloads) * 200 / elapsed:,.0f} "
                     f"({batch.readings.num_rows / elapsed:,.0f} readings/s)"))
    return rows


async def _post(url: str, headers: dict[str, str], bodies: list[bytes], connections: int,
                ok: int) -> int:
    import aiohttp

    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    retries = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal retries
        while not queue.empty():
            body = queue.get_nowait()
            while True:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status == ok:
                        break
                    if response.status != 503:
                        raise RuntimeError(f"{response.status}: {await response.text()}")
                    retries += 1
                    await asyncio.sleep(float(response.headers.get("Retry-After", "1")))

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as s:
        await asyncio.gather(*(worker(s) for _ in range(connections)))
    return retries


def _load(url: str, headers: dict[str, str], bodies: list[bytes], connections: int,
          ok: int) -> None:
    asyncio.run(_post(url, headers, bodies, connections, ok))


def post_all(url: str, headers: dict[str, str], bodies: list[bytes], connections: int,
             ok: int = 204) -> float:
    start = time.perf_counter()
    loader = multiprocessing.Process(target=_load, args=(url, headers, bodies, connections, ok))
    loader.start()
    loader.join()
    if loader.exitcode != 0:
        raise RuntimeError("load generator failed")
    return time.perf_counter() - start


SHAPES = {  # name: (devices, seconds between a device's points, what it stands for)
    "live": (1000, 1.0, "1,000 devices at 1 Hz, the last 5 minutes"),
    "backfill": (50, 50.0, "50 devices every 50 s over 3.5 days"),
}


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process `pid` so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sensorlake_e2e(tmp: Path, bodies: list[bytes], lines: int, connections: int,
                   devices: int, env: dict[str, str] | None = None
                   ) -> tuple[float, float, float]:
    """(seconds to queryable, seconds to the last 204, server CPU seconds) of one run."""
    data = tmp / "data"
    shutil.rmtree(data, ignore_errors=True)
    catalog = Catalog(data / "catalog.db")
    DeviceRegistry(catalog).upsert([Device(id=f"d{i}", lat=52.0, lon=5.0)
                                    for i in range(devices)])
    tokens = TokenStore(catalog)
    ingest, _ = tokens.create(Role.INGEST, "default", label="bench")
    owner, _ = tokens.create(Role.OWNER, "default", label="bench")
    catalog.close()
    server = Server(data, free_port(), env=env)
    try:
        headers = {"Authorization": f"Token {ingest}", "Content-Encoding": "gzip",
                   "Content-Type": "text/plain; charset=utf-8"}
        cpu = cpu_seconds(server.proc.pid)
        start = time.perf_counter()
        acked = post_all(f"{server.url}/api/v2/write?org=o&bucket=b&precision=ns", headers,
                         bodies, connections)
        status = server.wait_drained(owner)
        elapsed = time.perf_counter() - start
        cpu = cpu_seconds(server.proc.pid) - cpu
        if status["worker"]["stored"] < lines * 3:
            raise RuntimeError(f"stored {status['worker']['stored']} readings, expected "
                               f"at least {lines * 3}")
    finally:
        server.stop()
    return elapsed, acked, cpu


def influxdb_e2e(tmp: Path, bodies: list[bytes], connections: int) -> float | None:
    influxd = shutil.which("influxd")
    if influxd is None:
        return None
    port = free_port()
    root = tmp / "influx"
    config = root / "influxdb.conf"
    root.mkdir()
    config.write_text(f'bind-address = "127.0.0.1:{free_port()}"\n[meta]\n  dir = "{root}/meta"\n'
                      f'[data]\n  dir = "{root}/data"\n  wal-dir = "{root}/wal"\n'
                      f'[http]\n  bind-address = "127.0.0.1:{port}"\n  log-enabled = false\n'
                      "[reporting]\n  disabled = true\n[monitor]\n  store-enabled = false\n")
    proc = subprocess.Popen([influxd, "-config", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/ping", timeout=1).status_code == 204:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        httpx.post(f"{url}/query", data={"q": "CREATE DATABASE bench"}, timeout=10)
        return post_all(f"{url}/write?db=bench&precision=ns", {"Content-Encoding": "gzip"},
                        bodies, connections)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20_000, help="messages per codec")
    parser.add_argument("--lines", type=int, default=300_000, help="line-protocol points")
    parser.add_argument("--batch", type=int, default=5_000, help="lines per request")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--worker-batch-bytes", type=int, default=None,
                        help="the server's worker.batch_bytes (default: its own default)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="end-to-end runs per shape; the median is the figure")
    parser.add_argument("--shapes", default="live,backfill",
                        help="comma-separated workloads of the end-to-end run: "
                        + ", ".join(SHAPES))
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="slbench-sources-"))
    try:
        rows = decode_rates(args.messages, tmp)
        rows.append(("line protocol end to end: points", f"{args.lines:,} lines of 3 fields "
                     f"(pm2_5, pm10, temperature: 5 stored rows with aqi_us, aqi_uk), "
                     f"{args.batch:,} per request, gzip"))
        for shape in args.shapes.split(","):
            devices, interval, meaning = SHAPES[shape]
            bodies = [gzip.compress(line_batch(start, min(args.batch, args.lines - start),
                                               devices, interval, args.lines))
                      for start in range(0, args.lines, args.batch)]
            env = {} if args.worker_batch_bytes is None else {
                "SENSORLAKE_WORKER__BATCH_BYTES": str(args.worker_batch_bytes)}
            runs = sorted((sensorlake_e2e(tmp, bodies, args.lines, args.connections, devices,
                                          env) for _ in range(args.repeat)),
                          key=lambda run: run[0])
            elapsed, acked, cpu = runs[len(runs) // 2]
            listed = ", ".join(f"{args.lines / run[0]:,.0f}" for run in runs)
            rows += [(f"line protocol, {shape} ({meaning}): points/s to queryable "
                      "(median; floor 100,000)", f"{args.lines / elapsed:,.0f} "
                      f"({args.lines * 3 / elapsed:,.0f} field values/s; runs: {listed})"),
                     (f"line protocol, {shape}: points/s acknowledged (204), same run",
                      f"{args.lines / acked:,.0f}"),
                     (f"line protocol, {shape}: server CPU per point, same run (all threads)",
                      f"{cpu / args.lines * 1e6:.1f} µs")]
        influx = influxdb_e2e(tmp, bodies, args.connections)
        rows.append(("InfluxDB 1.6, same requests: points/s acknowledged",
                     "not installed" if influx is None else f"{args.lines / influx:,.0f}"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    append_results("sources: decode per codec, line protocol end to end (embedded)",
                   "python bench/sources.py " + " ".join(sys.argv[1:]), rows)


if __name__ == "__main__":
    main()
