"""The HTTP API in-process: FastAPI TestClient over a real Runtime (SQLite log, worker thread,
DuckDB hot store, Parquet lake) in a temp data folder.

Invariants covered: a 200 means the envelopes are in the log and end up queryable; watermarks
and duplicates are reported per device; authentication and tenant isolation; bad input is
quarantined with its raw bytes and a reason, never silently dropped; body limits (413) and a
full log (503 + Retry-After, nothing deleted).
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from sensorlake.api.app import create_app
from sensorlake.auth.tokens import Role
from sensorlake.config import load_settings
from sensorlake.log.base import Span
from sensorlake.registry import Device
from sensorlake.runtime import Runtime

POLL_TIMEOUT = 10.0
NDJSON = {"Content-Type": "application/x-ndjson"}


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def minute_ago(minutes: int) -> datetime:
    """The start of the UTC minute `minutes` ago (well inside the validation window)."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return now - timedelta(minutes=minutes)


def ndjson(*docs: dict) -> bytes:
    return b"\n".join(orjson.dumps(d) for d in docs) + b"\n"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def poll(fetch: Callable[[], Any], done: Callable[[Any], bool],
         timeout: float = POLL_TIMEOUT) -> Any:
    """Call `fetch` until `done(result)`; the last result either way (the assert says why)."""
    deadline = time.monotonic() + timeout
    while True:
        result = fetch()
        if done(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


class Api:
    """A runtime, its TestClient, and tokens for tenant "default" (device aq-1, aq-2)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.client = TestClient(create_app(runtime))
        for device in ("aq-1", "aq-2"):
            runtime.registry.add(Device(id=device, lat=52.1, lon=5.1))
        self.owner, _ = runtime.tokens.create(Role.OWNER, "default")
        self.ingest, _ = runtime.tokens.create(Role.INGEST, "default")

    def post(self, body: dict | bytes, token: str | None = None,
             headers: dict[str, str] | None = None) -> Any:
        content = body if isinstance(body, bytes) else orjson.dumps(body)
        return self.client.post("/api/v1/ingest", content=content,
                                headers={**auth(token or self.ingest), **(headers or {})})

    def get(self, path: str, token: str | None = None, **params: Any) -> Any:
        return self.client.get(path, params=params, headers=auth(token or self.owner))

    def readings(self, device: str, metric: str = "pm2_5", **params: Any) -> list[dict]:
        response = self.get(f"/api/v1/devices/{device}/readings", metric=metric,
                            **{"from": "-2h", **params})
        assert response.status_code == 200, response.text
        return response.json()["results"]

    def wait_readings(self, device: str, count: int, metric: str = "pm2_5",
                      **params: Any) -> list[dict]:
        return poll(lambda: self.readings(device, metric, **params),
                    lambda rows: len(rows) >= count)

    def wait_quarantine(self, count: int) -> list[dict]:
        return poll(lambda: self.get("/api/v1/quarantine").json()["results"],
                    lambda rows: len(rows) >= count)


@pytest.fixture
def make_api(tmp_path: Path) -> Iterator[Callable[..., Api]]:
    """Build an Api on its own data folder; `start_worker=False` leaves the log unconsumed."""
    runtimes: list[Runtime] = []

    def build(start_worker: bool = True, **overrides: Any) -> Api:
        worker = {"lake_flush_seconds": 0.2, "poll_seconds": 0.05,
                  **overrides.pop("worker", {})}
        settings = load_settings(data_dir=tmp_path / f"data{len(runtimes)}", worker=worker,
                                 **overrides)
        runtime = Runtime(settings)
        runtimes.append(runtime)
        if start_worker:
            runtime.start_worker()
        return Api(runtime)

    yield build
    for runtime in runtimes:
        runtime.close()


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api()


# -- ingest forms and read-back ---------------------------------------------------------------

def test_single_batch_and_ndjson_are_stored_and_queryable(api: Api) -> None:
    """Every accepted form (single, batch, NDJSON) answers accepted/duplicates/watermarks and
    its readings show up in the readings and latest endpoints, with aqi_us derived."""
    base = minute_ago(30)
    single = api.post({"device": "aq-1", "ts": iso(base), "seq": 1,
                       "readings": {"pm2_5": 12.3, "pm10": 20.1, "temperature": 21.5}})
    assert single.status_code == 200, single.text
    assert single.json() == {"accepted": 1, "duplicates": 0, "watermarks": {"aq-1": 1}}

    batch = api.post({"device": "aq-1", "batch": [
        {"ts": iso(base + timedelta(seconds=10)), "readings": {"pm2_5": 30.0}},
        {"ts": iso(base + timedelta(seconds=20)), "readings": {"pm2_5": 40.0}}]})
    assert batch.status_code == 200, batch.text
    assert batch.json()["accepted"] == 1  # one envelope holding two entries
    assert batch.json()["duplicates"] == 0

    lines = ndjson(*({"device": "aq-2", "ts": iso(base + timedelta(seconds=s)), "seq": s,
                      "readings": {"pm2_5": 5.0 + s}} for s in (1, 2, 3)))
    multi = api.post(lines, headers=NDJSON)
    assert multi.status_code == 200, multi.text
    assert multi.json() == {"accepted": 3, "duplicates": 0, "watermarks": {"aq-2": 3}}

    rows = api.wait_readings("aq-1", 3)
    assert [r["value"] for r in rows] == [12.3, 30.0, 40.0]
    assert rows[0]["ts"] == iso(base).replace(".000Z", "Z")
    assert [r["value"] for r in api.wait_readings("aq-2", 3)] == [6.0, 7.0, 8.0]

    aqi = api.wait_readings("aq-1", 3, metric="aqi_us")
    assert len(aqi) == 3 and all(r["value"] > 0 for r in aqi)

    latest = poll(lambda: api.get("/api/v1/latest", metric="pm2_5").json()["results"],
                  lambda rows: len(rows) == 2)
    by_device = {r["device_id"]: r for r in latest}
    assert by_device["aq-1"]["value"] == 40.0 and by_device["aq-2"]["value"] == 8.0
    assert all(r["metric"] == "pm2_5" for r in latest)


def test_gzip_body_is_accepted(api: Api) -> None:
    """Content-Encoding: gzip is inflated before parsing."""
    body = gzip.compress(orjson.dumps({"device": "aq-1", "ts": iso(minute_ago(5)),
                                       "readings": {"pm2_5": 9.9}}))
    response = api.post(body, headers={"Content-Encoding": "gzip",
                                       "Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    assert [r["value"] for r in api.wait_readings("aq-1", 1)] == [9.9]


def test_watermark_and_duplicates(api: Api) -> None:
    """The watermark is the highest seq stored without a gap; a resent seq is a duplicate
    (no-op) and never becomes a second row. `accepted` counts every usable envelope that is
    durably stored, whether it is new or a duplicate (`duplicates` says how many were)."""
    base = minute_ago(20)

    def envelope(seq: int) -> dict:
        return {"device": "aq-1", "ts": iso(base + timedelta(seconds=seq)), "seq": seq,
                "readings": {"pm2_5": float(seq)}}

    first = api.post(ndjson(envelope(1), envelope(2), envelope(4)), headers=NDJSON)
    assert first.json() == {"accepted": 3, "duplicates": 0, "watermarks": {"aq-1": 2}}
    gap_filled = api.post(envelope(3))
    assert gap_filled.json() == {"accepted": 1, "duplicates": 0, "watermarks": {"aq-1": 4}}
    again = api.post(envelope(2))
    assert again.status_code == 200
    assert again.json() == {"accepted": 1, "duplicates": 1, "watermarks": {"aq-1": 4}}

    rows = api.wait_readings("aq-1", 4)
    time.sleep(0.5)  # give a (wrong) duplicate row the chance to land
    rows = api.readings("aq-1")
    assert [r["value"] for r in rows] == [1.0, 2.0, 3.0, 4.0]
    assert api.runtime.log.stats().last_offset == 4


# -- authentication and tenants ---------------------------------------------------------------

def test_missing_or_bad_token_is_401(api: Api) -> None:
    body = orjson.dumps({"device": "aq-1", "readings": {"pm2_5": 1.0}})
    assert api.client.post("/api/v1/ingest", content=body).status_code == 401
    for token in ("slk_not-a-real-token", "garbage"):
        response = api.post(body, token=token)
        assert response.status_code == 401, token
        assert response.headers["www-authenticate"] == "Bearer"
    assert api.client.get("/api/v1/devices").status_code == 401
    assert api.runtime.log.stats().last_offset == 0


def test_device_bound_token_cannot_send_as_another_device(api: Api) -> None:
    """A token bound to aq-1 posting as aq-2 (alone or inside NDJSON) is 403; nothing is
    appended to the log."""
    bound, _ = api.runtime.tokens.create(Role.INGEST, "default", "aq-1")
    ts = iso(minute_ago(10))
    alone = api.post({"device": "aq-2", "ts": ts, "readings": {"pm2_5": 1.0}}, token=bound)
    assert alone.status_code == 403, alone.text
    mixed = api.post(ndjson({"device": "aq-1", "ts": ts, "readings": {"pm2_5": 1.0}},
                            {"device": "aq-2", "ts": ts, "readings": {"pm2_5": 2.0}}),
                     token=bound, headers=NDJSON)
    assert mixed.status_code == 403, mixed.text
    assert api.runtime.log.stats().last_offset == 0

    own = api.post({"ts": ts, "readings": {"pm2_5": 3.0}}, token=bound)  # device implied
    assert own.status_code == 200, own.text
    assert [r["value"] for r in api.wait_readings("aq-1", 1)] == [3.0]
    assert api.readings("aq-2") == []


def test_ingest_token_cannot_read(api: Api) -> None:
    for path in ("/api/v1/devices", "/api/v1/latest", "/api/v1/devices/aq-1/readings",
                 "/api/v1/quarantine", "/api/v1/status"):
        response = api.get(path, token=api.ingest, metric="pm2_5")
        assert response.status_code == 403, path


def test_tenants_are_isolated(api: Api) -> None:
    """An owner of tenant B sees neither tenant A's devices nor its readings (404, not 403:
    another tenant's device does not exist for B)."""
    runtime = api.runtime
    runtime.registry.add(Device(id="b-1", tenant="b"))
    owner_b, _ = runtime.tokens.create(Role.OWNER, "b")
    ingest_b, _ = runtime.tokens.create(Role.INGEST, "b")
    ts = iso(minute_ago(10))
    assert api.post({"device": "aq-1", "ts": ts, "readings": {"pm2_5": 11.0}}).status_code == 200
    assert api.post({"device": "b-1", "ts": ts, "readings": {"pm2_5": 22.0}},
                    token=ingest_b).status_code == 200
    api.wait_readings("aq-1", 1)

    foreign = api.get("/api/v1/devices/aq-1/readings", token=owner_b, metric="pm2_5")
    assert foreign.status_code == 404, foreign.text
    devices_b = api.get("/api/v1/devices", token=owner_b).json()
    assert [d["id"] for d in devices_b["results"]] == ["b-1"]
    assert devices_b["meta"] == {"tenant": "b", "count": 1}
    devices_a = api.get("/api/v1/devices").json()
    assert [d["id"] for d in devices_a["results"]] == ["aq-1", "aq-2"]

    latest_b = poll(lambda: api.get("/api/v1/latest", token=owner_b, metric="pm2_5").json(),
                    lambda body: body["meta"]["count"] == 1)
    assert [(r["device_id"], r["value"]) for r in latest_b["results"]] == [("b-1", 22.0)]
    latest_a = api.get("/api/v1/latest", metric="pm2_5").json()["results"]
    assert [(r["device_id"], r["value"]) for r in latest_a] == [("aq-1", 11.0)]


# -- bad input goes to the quarantine ---------------------------------------------------------

def test_bad_ndjson_line_is_quarantined_with_raw_bytes(api: Api) -> None:
    """One unparsable line among good ones: the good ones are stored, the bad one is kept in
    the quarantine with its bytes and a reason."""
    base = minute_ago(15)
    good = [orjson.dumps({"device": "aq-1", "ts": iso(base + timedelta(seconds=s)),
                          "readings": {"pm2_5": float(s)}}) for s in (1, 2, 3)]
    bad = b'{"device": "aq-1", "readings": {"pm2_5": 4.0'
    response = api.post(b"\n".join([good[0], good[1], bad, good[2]]), headers=NDJSON)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["quarantined"] == 1
    assert body["accepted"] == 3
    assert "line 3" in body["errors"][0]["error"]

    assert [r["value"] for r in api.wait_readings("aq-1", 3)] == [1.0, 2.0, 3.0]
    rows = api.wait_quarantine(1)
    assert len(rows) == 1
    assert rows[0]["payload"] == bad.decode()
    assert "invalid JSON at byte" in rows[0]["reason"]
    assert rows[0]["source"] == "http"


def test_out_of_range_value_is_quarantined_others_kept(api: Api) -> None:
    """humidity=140 is rejected with a reason naming device, metric and value; the message's
    other metrics are stored."""
    ts = iso(minute_ago(12))
    message = {"device": "aq-2", "ts": ts, "seq": 1,
               "readings": {"pm2_5": 8.0, "humidity": 140, "temperature": 20.5}}
    response = api.post(message)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1

    rows = api.wait_quarantine(1)
    assert len(rows) == 1
    reason = rows[0]["reason"]
    assert "aq-2" in reason and "humidity" in reason and "140" in reason, reason
    assert rows[0]["field"] == "humidity"
    assert orjson.loads(rows[0]["payload"]) == message

    assert [r["value"] for r in api.wait_readings("aq-2", 1)] == [8.0]
    assert [r["value"] for r in api.wait_readings("aq-2", 1, metric="temperature")] == [20.5]
    assert api.readings("aq-2", metric="humidity") == []


# -- limits -----------------------------------------------------------------------------------

def test_body_over_limit_is_413(make_api: Callable[..., Api]) -> None:
    api = make_api(http={"max_body_bytes": 2000})
    ts = iso(minute_ago(5))
    big = ndjson(*({"device": "aq-1", "ts": ts, "seq": s, "readings": {"pm2_5": 1.0}}
                   for s in range(1, 60)))
    assert len(big) > 2000
    assert api.post(big, headers=NDJSON).status_code == 413

    # A gzip bomb: a few hundred bytes on the wire, far over the limit once inflated.
    bomb = gzip.compress(b'{"device": "aq-1", "readings": {"pm2_5": 1.0}}' + b" " * 1_000_000)
    assert len(bomb) < 2000
    response = api.post(bomb, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 413, response.text
    assert api.runtime.log.stats().last_offset == 0

    fits = api.post({"device": "aq-1", "ts": ts, "readings": {"pm2_5": 1.0}})
    assert fits.status_code == 200, fits.text


def test_full_log_answers_503_and_deletes_nothing(make_api: Callable[..., Api]) -> None:
    """With nobody consuming, the log fills up: ingest answers 503 with Retry-After and every
    envelope it accepted before is still there."""
    api = make_api(start_worker=False, log={"max_bytes": 3000})
    base = minute_ago(8)
    accepted: list[int] = []
    refused = None
    for seq in range(1, 200):
        response = api.post({"device": "aq-1", "ts": iso(base + timedelta(seconds=seq)),
                             "seq": seq, "readings": {"pm2_5": 1.5, "pm10": 2.5}})
        if response.status_code == 503:
            refused = response
            break
        assert response.status_code == 200, response.text
        accepted.append(seq)
    assert refused is not None, "the log never filled up"
    assert int(refused.headers["retry-after"]) >= 1
    assert "full" in refused.json()["detail"]
    assert accepted

    stats = api.runtime.log.stats()
    assert stats.last_offset == len(accepted)
    assert stats.first_offset == 1
    assert 0 < stats.stored_bytes <= 3000
    kept = api.runtime.log.read_span(Span(1, len(accepted))).table
    assert kept.column("seq").to_pylist() == accepted

    again = api.post({"device": "aq-1", "ts": iso(base), "seq": 999,
                      "readings": {"pm2_5": 1.0}})
    assert again.status_code == 503
    assert api.runtime.log.stats().last_offset == len(accepted)


# -- operations -------------------------------------------------------------------------------

def test_healthz_status_and_openapi(make_api: Callable[..., Api]) -> None:
    api = make_api(start_worker=False)
    assert api.client.get("/healthz").status_code == 503
    api.runtime.start_worker()
    health = poll(lambda: api.client.get("/healthz"), lambda r: r.status_code == 200)
    assert health.status_code == 200 and health.json() == {"status": "ok"}

    status = api.get("/api/v1/status").json()
    assert status["log"]["backlog"] == 0 and status["quarantine"]["count"] == 0

    paths = api.client.get("/openapi.json").json()["paths"]
    for path in ("/api/v1/ingest", "/api/v1/devices", "/api/v1/latest",
                 "/api/v1/devices/{device_id}/readings", "/api/v1/status",
                 "/api/v1/quarantine", "/healthz"):
        assert path in paths, path


def test_bucketed_readings(api: Api) -> None:
    """every=1m&agg=max: one bucket per minute, aligned to the minute, with max and count."""
    start = minute_ago(10)
    values = [3.0, 17.5, 9.0, 12.0]
    api.post(ndjson(*({"device": "aq-1", "ts": iso(start + timedelta(seconds=5 + 10 * i)),
                       "readings": {"pm2_5": v}} for i, v in enumerate(values))),
             headers=NDJSON)
    api.post({"device": "aq-1", "ts": iso(start + timedelta(minutes=1, seconds=30)),
              "readings": {"pm2_5": 50.0}})
    api.wait_readings("aq-1", 5)

    window = {"from": iso(start), "to": iso(start + timedelta(minutes=2))}
    response = api.get("/api/v1/devices/aq-1/readings", metric="pm2_5", every="1m",
                       agg="max", **window)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["meta"]["every"] == "1m" and body["meta"]["agg"] == "max"
    assert [(r["ts"], r["value"], r["count"]) for r in body["results"]] == [
        (iso(start).replace(".000Z", "Z"), 17.5, 4),
        (iso(start + timedelta(minutes=1)).replace(".000Z", "Z"), 50.0, 1),
    ]
    bad = api.get("/api/v1/devices/aq-1/readings", metric="pm2_5", every="1m", agg="median")
    assert bad.status_code == 422
