"""The BOLA matrix: 2 tenants x {owner, guest, utility inside and outside its window, public,
anonymous} x every route -> the expected status. Another tenant's ids answer 404.

Every route of the app must appear in ROUTES (test_every_route_is_in_the_matrix), so a new
route cannot ship without its row. Statuses are per principal in PRINCIPALS order; the
principals of a row run from the last (anonymous) to the first (owner).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from world import PASSWORD, PRINCIPALS, World, app_routes

from sensorlake.auth.ratelimit import RateLimiter

OK = 200


def row(method: str, path: str, statuses: tuple[int, ...], body: object = None,
        other: bool = False) -> tuple:
    return (method, path, statuses, body, other)


# {own}: a device of the caller's tenant; {other}: the same device of the other tenant.
ROUTES = [
    row("GET", "/healthz", (503,) * 6),
    row("GET", "/", (OK,) * 6),
    row("GET", "/api/v1/catalog", (OK,) * 6),
    row("GET", "/api/v1/auth/me", (OK,) * 6),
    row("POST", "/api/v1/auth/login", (OK,) * 6,
        {"tenant": "{T}", "username": "{T}-guest", "password": PASSWORD}),
    row("POST", "/api/v1/auth/login", (401,) * 6,
        {"tenant": "{X}", "username": "{T}-guest", "password": PASSWORD}),
    row("GET", "/api/v1/devices", (OK, OK, OK, 403, 403, 401)),
    row("POST", "/api/v1/devices", (201, 403, 403, 403, 403, 401), {"id": "{T}-new"}),
    row("GET", "/api/v1/devices/{T}-aq-2", (OK, OK, 403, 403, 403, 401)),
    row("GET", "/api/v1/devices/{T}-energy-1", (OK, 403, OK, 403, 403, 401)),
    row("GET", "/api/v1/devices/{X}-aq-2", (404,) * 6, other=True),
    row("PATCH", "/api/v1/devices/{T}-aq-2", (OK, 403, 403, 403, 403, 401), {"name": "x"}),
    row("PATCH", "/api/v1/devices/{X}-aq-2", (404,) * 6, {"name": "x"}, other=True),
    row("DELETE", "/api/v1/devices/{X}-spare", (404,) * 6, other=True),
    row("GET", "/api/v1/devices/{T}-aq-2/readings?metric=pm2_5",
        (OK, OK, 403, 403, 403, 401)),
    row("GET", "/api/v1/devices/{T}-energy-1/readings?metric=power",
        (OK, 403, OK, 403, 403, 401)),
    row("GET", "/api/v1/devices/{X}-aq-2/readings?metric=pm2_5", (404,) * 6, other=True),
    row("GET", "/api/v1/readings?metric=pm2_5", (OK, OK, OK, 403, 403, 401)),
    row("GET", "/api/v1/readings?metric=pm2_5&device={T}-aq-1",
        (OK, 403, 403, 403, 403, 401)),
    row("GET", "/api/v1/readings?metric=pm2_5&device={X}-aq-1", (404,) * 6, other=True),
    row("GET", "/api/v1/latest", (OK, OK, OK, 403, OK, OK)),
    row("GET", "/api/v1/latest?device={T}-aq-1", (OK, OK, OK, 403, OK, OK)),
    row("GET", "/api/v1/latest?device={T}-aq-2", (OK, OK, 403, 403, 403, 401)),
    row("GET", "/api/v1/latest?device={X}-aq-1", (404,) * 6, other=True),
    row("GET", "/api/v1/map", (OK, OK, OK, 403, OK, OK)),
    row("GET", "/api/v1/export?metric=pm2_5", (OK, OK, 403, 403, 403, 401)),
    row("GET", "/api/v1/export?metric=pm2_5&device={T}-aq-2", (OK, OK, 403, 403, 403, 401)),
    row("GET", "/api/v1/export?metric=pm2_5&device={X}-aq-2", (404,) * 6, other=True),
    row("GET", "/api/v1/quarantine", (OK, 403, 403, 403, 403, 401)),
    row("GET", "/api/v1/status", (OK, 403, 403, 403, 403, 401)),
    row("GET", "/api/v1/tokens", (OK, 403, 403, 403, 403, 401)),
    row("POST", "/api/v1/tokens", (201, 403, 403, 403, 403, 401), {"role": "ingest"}),
    row("DELETE", "/api/v1/tokens/{X_TOKEN}", (404, 403, 403, 403, 403, 401), other=True),
    row("GET", "/api/v1/grants", (OK, 403, 403, 403, 403, 401)),
    row("POST", "/api/v1/grants", (201, 403, 403, 403, 403, 401),
        {"template": "guest", "user": "{T}-guest", "device": "{T}-aq-1"}),
    row("DELETE", "/api/v1/grants/{X_GRANT}", (404, 403, 403, 403, 403, 401), other=True),
    row("GET", "/api/v1/audit", (OK, 403, 403, 403, 403, 401)),
    row("POST", "/api/v1/ingest", (OK, 403, 403, 403, 403, 401),
        {"device": "{T}-aq-1", "readings": {"pm2_5": 3.0}}),
    row("GET", "/livez", (OK,) * 6),
    row("GET", "/readyz", (503,) * 6),  # no worker in this world
    row("GET", "/metrics", (OK,) * 6),  # status.metrics_public (default true)
    row("GET", "/api/v1/alerts", (OK, 403, 403, 403, 403, 401)),
    row("GET", "/api/v1/jobs", (OK, 403, 403, 403, 403, 401)),
    row("GET", "/api/v1/jobs/runs", (OK, 403, 403, 403, 403, 401)),
    row("GET", "/api/v1/jobs/runs/999999", (404, 403, 403, 403, 403, 401)),
    row("POST", "/api/v1/jobs/no-such-job/runs", (404, 403, 403, 403, 403, 401), {}),
    # the sources (issue 4): write-only routes, like /api/v1/ingest
    row("POST", "/api/v2/write", (204, 403, 403, 403, 403, 401)),
    row("POST", "/api/v1/integrations/chirpstack", (OK, 403, 403, 403, 403, 401),
        {"deduplicationId": "bola-{T}", "deviceInfo": {"devEui": "{T}-aq-1"}}),
    row("POST", "/api/v1/integrations/tts", (OK, 403, 403, 403, 403, 401),
        {"end_device_ids": {"device_id": "{T}-aq-1"}, "correlation_ids": ["as:up:bola-{T}"],
         "uplink_message": {"f_port": 1}}),
    row("POST", "/api/v1/integrations/airrohr", (OK, 403, 403, 403, 403, 401),
        {"esp8266id": "1", "sensordatavalues": []}),
    row("POST", "/api/v1/integrations/sensor-community", (OK, 403, 403, 403, 403, 401), []),
    # last: these change the world
    row("DELETE", "/api/v1/devices/{T}-spare", (204, 403, 403, 403, 403, 401)),
    # utility_in and utility_out share one session: the first (out, see the order) ends it
    row("POST", "/api/v1/auth/logout", (204, 204, 401, 204, 204, 401)),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    built = World(tmp_path_factory.mktemp("bola") / "data")
    yield built
    built.close()


def fill(text: str, world: World, tenant: str) -> str:
    other = "b" if tenant == "a" else "a"
    return (text.replace("{T}", tenant).replace("{X_TOKEN}", world.tenants[other].token_id)
            .replace("{X_GRANT}", world.tenants[other].grant_id).replace("{X}", other))


@pytest.mark.parametrize("tenant", ["a", "b"])
def test_matrix(world: World, tenant: str) -> None:
    failures = []
    world.runtime.settings.api.public_tenant = tenant  # the anonymous visitor's tenant
    world.runtime.auth.rate_limiter = RateLimiter()  # a fresh login budget for this run
    for method, path, statuses, body, other in ROUTES:
        assert not other or statuses[0] == 404, f"{path}: another tenant's id must be 404"
        # owner last: its requests may change the world (delete, logout)
        for index, principal in reversed(list(enumerate(PRINCIPALS))):
            url = fill(path, world, tenant)
            content = orjson.loads(fill(orjson.dumps(body).decode(), world, tenant)) \
                if body is not None else None
            if method == "POST" and path == "/api/v1/devices" and content:
                content["id"] = f"{tenant}-new-{principal}"
            headers = world.headers(tenant, principal)
            response = world.client.request(method, url, headers=headers, json=content)
            want = statuses[index]
            if response.status_code != want:
                failures.append(f"{principal:<11} {method:<6} {url}: {response.status_code} "
                                f"!= {want} ({response.text[:120]})")
    assert not failures, f"tenant {tenant}:\n" + "\n".join(failures)


def test_every_route_is_in_the_matrix() -> None:
    APP_ROUTES = app_routes()
    covered = {(m, p.split("?")[0].replace("{T}-aq-2", "{device_id}")
                .replace("{T}-energy-1", "{device_id}").replace("{X}-aq-2", "{device_id}")
                .replace("{T}-spare", "{device_id}").replace("{X}-spare", "{device_id}")
                .replace("{X_TOKEN}", "{token_id}").replace("{X_GRANT}", "{grant_id}")
                .replace("999999", "{run_id}").replace("no-such-job", "{name}"))
               for m, p, *_ in ROUTES}
    assert len(APP_ROUTES) > 20, APP_ROUTES
    missing = [f"{m} {p}" for m, p in APP_ROUTES if (m, p) not in covered]
    assert not missing, f"routes without a row in the BOLA matrix: {missing}"


def test_anonymous_without_public_mode_gets_401(tmp_path: Path) -> None:
    world = World(tmp_path / "data", public_tenant=None)
    try:
        for path in ("/api/v1/latest", "/api/v1/map", "/api/v1/devices",
                     "/api/v1/devices/a-aq-1/readings?metric=pm2_5", "/api/v1/auth/me"):
            response = world.client.get(path)
            assert response.status_code == 401, (path, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
        assert world.client.get("/api/v1/catalog").status_code == 200
    finally:
        world.close()


def test_each_role_sees_exactly_its_devices(tmp_path: Path) -> None:
    """The rows of the list routes are what the policies allow, and nothing else."""
    world = World(tmp_path / "data")
    try:
        _check_rows(world)
    finally:
        world.close()


def _check_rows(world: World) -> None:
    world.runtime.hot.write(_readings(["a-aq-1", "a-aq-2", "a-energy-1", "b-aq-1"]))
    expect = {"owner": {"a-aq-1", "a-aq-2", "a-energy-1"},
              "guest": {"a-aq-1", "a-aq-2"},  # its grant, plus public latest/map
              "utility_in": {"a-aq-1", "a-energy-1"},
              "public": {"a-aq-1"}, "anonymous": {"a-aq-1"}}
    for principal, devices in expect.items():
        headers = world.headers("a", principal)
        latest = world.client.get("/api/v1/latest", headers=headers).json()["results"]
        assert {r["device_id"] for r in latest} == devices, principal
        layer = world.client.get("/api/v1/map", headers=headers).json()["features"]
        assert {f["id"] for f in layer} <= devices | {"a-spare"}, principal
    readable = {"owner": {"a-aq-1", "a-aq-2", "a-energy-1"}, "guest": {"a-aq-2"},
                "utility_in": {"a-energy-1"}}
    for principal, devices in readable.items():
        headers = world.headers("a", principal)
        body = world.client.get("/api/v1/readings", params={"metric": ["pm2_5", "power"],
                                                            "from": "2026-11-23T00:00:00Z",
                                                            "to": "2026-11-24T00:00:00Z"},
                                headers=headers).json()
        assert {r["device_id"] for r in body["results"]} == devices, principal
        listed = world.client.get("/api/v1/devices", headers=headers).json()["results"]
        assert {d["id"] for d in listed} <= devices | {"a-spare", "a-new-owner"}, principal


def _readings(devices: list[str]):
    import pyarrow as pa

    from sensorlake.model import READING_SCHEMA

    at = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    rows = [{"tenant": d[0], "device_id": d, "metric": "power" if "energy" in d else "pm2_5",
             "ts": at, "value": 5.0, "quality": 0, "received_at": at, "lat": 52.1, "lon": 5.1}
            for d in devices]
    return pa.Table.from_pylist(rows, schema=READING_SCHEMA)
