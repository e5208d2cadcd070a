"""deploy/grafana/: the provisioning parses, every panel uses a provisioned data source, every
API URL is a real route, the AQI map uses the official EPA breakpoints and colours, and the
read-only PostgreSQL role really sees one tenant and cannot write (real PostgreSQL)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from sensorlake.aqi import US_EPA_CATEGORIES
from services import require_binary, require_service, unique_name

ROOT = Path(__file__).resolve().parents[2] / "deploy" / "grafana"


def _dashboard() -> dict:
    return json.loads((ROOT / "dashboards" / "sensorlake.json").read_text())


def test_provisioning_is_consistent() -> None:
    sources = yaml.safe_load((ROOT / "provisioning/datasources/sensorlake.yaml").read_text())
    uids = {d["uid"]: d["type"] for d in sources["datasources"]}
    assert uids == {"sensorlake-api": "yesoreyeram-infinity-datasource",
                    "sensorlake-pg": "grafana-postgresql-datasource"}
    text = (ROOT / "provisioning/datasources/sensorlake.yaml").read_text()
    assert "slk_" not in text and "${SENSORLAKE_API_TOKEN}" in text  # no secret committed
    yaml.safe_load((ROOT / "provisioning/dashboards/sensorlake.yaml").read_text())
    panels = _dashboard()["panels"]
    assert {p["type"] for p in panels} >= {"geomap", "timeseries", "table"}
    for panel in panels:
        for target in panel["targets"]:
            assert uids[target["datasource"]["uid"]] == target["datasource"]["type"]


def test_api_urls_are_routes() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
    from world import app_routes

    paths = {path for _, path in app_routes()}
    urls = [t["url"] for p in _dashboard()["panels"] for t in p["targets"] if "url" in t]
    assert urls and all(url in paths for url in urls), urls


def test_map_thresholds_are_the_epa_categories() -> None:
    geomap = next(p for p in _dashboard()["panels"] if p["type"] == "geomap")
    steps = geomap["fieldConfig"]["defaults"]["thresholds"]["steps"]
    expected = [None] + [top + 1 for top, _, _ in US_EPA_CATEGORIES[:-1]]
    assert [s["value"] for s in steps] == expected
    assert [s["color"] for s in steps] == [c for _, _, c in US_EPA_CATEGORIES]


def _psql(sql: str, user: str = "postgres", *variables: str, file: Path | None = None,
          check: bool = True) -> subprocess.CompletedProcess:
    psql = require_binary("psql", "/usr/bin/psql")
    args = [psql, "-h", "127.0.0.1", "-U", user, "-d", "test", "-v", "ON_ERROR_STOP=1", "-At"]
    for variable in variables:
        args += ["-v", variable]
    args += ["-f", str(file)] if file else ["-c", sql]
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=check)


def test_readonly_role_sees_one_tenant() -> None:
    require_service("PostgreSQL", 5432)
    store, role = unique_name("store"), unique_name("grafana")
    _psql(f"CREATE SCHEMA {store};"
          f"CREATE TABLE {store}.readings (tenant text, device_id text, metric text,"
          " ts timestamptz, value double precision, quality smallint, lat double precision,"
          " lon double precision);"
          f"CREATE TABLE {store}.latest (tenant text, device_id text, metric text,"
          " ts timestamptz, value double precision, lat double precision,"
          " lon double precision);"
          f"INSERT INTO {store}.readings VALUES ('a','a-1','pm2_5',now(),1,0,52,5),"
          "('b','b-1','pm2_5',now(),2,0,52,5);"
          f"INSERT INTO {store}.latest VALUES ('a','a-1','pm2_5',now(),1,52,5),"
          "('b','b-1','pm2_5',now(),2,52,5);")
    try:
        _psql("", "postgres", "tenant=a", f"role={role}", "password=not-used-with-trust",
              f"store_schema={store}", file=ROOT / "postgres-readonly.sql")
        seen = _psql("SELECT device_id FROM readings UNION ALL SELECT device_id FROM latest",
                     role).stdout.split()
        assert seen == ["a-1", "a-1"]
        base = _psql(f"SELECT count(*) FROM {store}.readings", role, check=False)
        assert base.returncode != 0 and "permission denied" in base.stderr
        write = _psql("INSERT INTO readings (device_id) VALUES ('x')", role, check=False)
        assert write.returncode != 0 and "permission denied" in write.stderr
        assert _psql("SHOW default_transaction_read_only", role).stdout.strip() == "on"
        dashboard_sql = next(t["rawSql"] for p in _dashboard()["panels"] for t in p["targets"]
                             if "rawSql" in t)
        runnable = (dashboard_sql.replace("$__timeGroupAlias(ts, $__interval)",
                                          "date_bin('1 minute', ts, 'epoch') AS time")
                    .replace("${metric}", "pm2_5").replace("$__timeFilter(ts)",
                                                           "ts > now() - interval '1 day'"))
        rows = _psql(runnable, role).stdout.strip().splitlines()
        assert len(rows) == 1 and "|a-1|" in rows[0]
    finally:
        _psql(f"DROP SCHEMA IF EXISTS {role} CASCADE; DROP SCHEMA {store} CASCADE;"
              f"DROP ROLE IF EXISTS {role};", check=False)
