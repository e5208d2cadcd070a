"""`sensorlake poll sensor-community` next to a running `sensorlake up`: the records go to the
server over HTTP with a temporary ingest token, which is revoked when the command ends."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest
from e2e_support import Server, run_cli

from sensorlake.auth.tokens import Role, TokenStore
from sensorlake.catalog import Catalog

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "sensor_community" / "data.json"


@pytest.mark.slow
def test_poll_delivers_to_the_running_server(tmp_path: Path,
                                             make_server: Callable[..., Server]) -> None:
    body = FIXTURE.read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    files = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    data = tmp_path / "data"
    catalog = Catalog(data / "catalog.db")
    owner, _ = TokenStore(catalog).create(Role.OWNER, "default", label="test")
    catalog.close()
    server = make_server(data)
    server.start()
    try:
        url = f"http://127.0.0.1:{files.server_address[1]}/data.json"
        done = run_cli("poll", "sensor-community", "--once", "--url", url, "--data-dir", data,
                       "-f", "json", timeout=120)
        assert done.returncode == 0, done.stderr
        assert orjson.loads(done.stdout)[0]["new"] == 8
        again = run_cli("poll", "sensor-community", "--once", "--url", url, "--data-dir", data,
                        "-f", "json", timeout=120)
        assert orjson.loads(again.stdout)[0]["seen"] == 8, again.stdout
        latest = httpx.get(f"{server.url}/api/v1/latest", params={"metric": "pm10"},
                           headers={"Authorization": f"Bearer {owner}"}, timeout=10).json()
        assert {row["device_id"] for row in latest["results"]} >= {"sc-1356", "sc-11654"}
    finally:
        server.stop()
        files.shutdown()
        files.server_close()
    catalog = Catalog(data / "catalog.db")
    tokens = TokenStore(catalog).list("default")
    catalog.close()
    temporary = [t for t in tokens if "temporary" in t.label]
    assert len(temporary) == 2 and all(t.revoked_at for t in temporary)
