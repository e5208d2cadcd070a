"""The dashboard in headless Chromium (Debian's chromium + chromedriver, driven by selenium):
a real server with the demo's simulated devices, a sign-in through the form, the map with
every device, a click on one, its chart. Saves a screenshot (SCREENSHOT_DIR=folder to
keep it). Skips without Chromium on a developer's machine; fails under CI=true.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest
from argon2 import PasswordHasher

from sensorlake.auth.tokens import Role
from sensorlake.config import load_settings
from sensorlake.runtime import Runtime
from sensorlake.simulator import envelope, fleet
from services import in_ci, require_binary

DEVICES = 14
PASSWORD = "dashboard password"
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Runtime]:
    settings = load_settings(data_dir=tmp_path / "data",
                             worker={"lake_flush_seconds": 1, "poll_seconds": 0.05},
                             dashboard={"tile_url": ""})
    runtime = Runtime(settings)
    runtime.auth.users.hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    sims = fleet(DEVICES, "default")
    runtime.registry.upsert([s.device for s in sims])
    runtime.auth.users.add("default", "mayor", PASSWORD, Role.OWNER)
    ingest, _ = runtime.tokens.create(Role.INGEST, "default")
    runtime.start_worker()
    port = _free_port()
    thread = threading.Thread(target=runtime.serve, args=("127.0.0.1", port), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    import random
    rng = random.Random(1)
    start = datetime.now(UTC) - timedelta(hours=2)
    lines = [orjson.dumps(envelope(sim, start + timedelta(minutes=m), rng))
             for m in range(0, 120, 2) for sim in sims]
    response = httpx.post(f"{url}/api/v1/ingest", content=b"\n".join(lines),
                          headers={"Authorization": f"Bearer {ingest}",
                                   "Content-Type": "application/x-ndjson"}, timeout=60)
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 60
    while runtime.worker.cursor < runtime.log.stats().last_offset and (
            time.monotonic() < deadline):
        time.sleep(0.1)
    runtime.url = url
    yield runtime
    runtime.request_stop()
    thread.join(timeout=60)


def _browser():
    require_binary("chromium", "/usr/bin/chromium")
    driver_path = require_binary("chromedriver", "/usr/bin/chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        if in_ci():
            pytest.fail("selenium is not installed (pip install -e '.[dev]')")
        pytest.skip("selenium is not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 "--window-size=1280,860"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=options)


def _wait(driver, condition, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(condition)
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def test_dashboard_map_and_chart(server: Runtime, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver = _browser()
    try:
        driver.get(server.url + "/")
        assert _wait(driver, "return document.body.dataset.ready === 'true'")
        driver.find_element(By.ID, "login-user").send_keys("mayor")
        driver.find_element(By.ID, "login-password").send_keys(PASSWORD)
        driver.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
        count = _wait(driver, f"return Number(document.body.dataset.devices) >= {DEVICES}"
                      " && document.body.dataset.devices")
        assert count == str(DEVICES), f"the map shows {count} devices, expected {DEVICES}"
        colours = driver.execute_script(
            "return [...document.querySelectorAll('path.device-marker')]"
            ".map(p => p.getAttribute('fill'))")
        assert len(colours) == DEVICES
        assert all(c and c.upper() != "#9E9E9E" for c in colours), colours  # AQI coloured
        land = driver.execute_script(
            "return document.querySelectorAll('.leaflet-overlay-pane path').length")
        assert land > DEVICES + 50, "the bundled base map was not drawn"
        marker = driver.find_element(By.CSS_SELECTOR, 'path[data-device="aq-0001"]')
        marker.click()
        assert _wait(driver, "return document.body.dataset.chart === 'ready'"), (
            driver.find_element(By.ID, "chart-note").text)
        assert driver.find_element(By.CSS_SELECTOR, "#chart canvas").is_displayed()
        note = driver.find_element(By.ID, "chart-note").text
        assert "points" in note and int(note.split()[0]) > 10, note
        assert "aq-0001" in driver.find_element(By.ID, "panel-title").text
        assert "Updated" in driver.find_element(By.ID, "panel-fresh").text
        folder = Path(os.environ.get("SCREENSHOT_DIR") or tmp_path)
        folder.mkdir(parents=True, exist_ok=True)
        shot = folder / "dashboard.png"
        time.sleep(0.5)  # let the chart's first frame paint
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 20_000
    finally:
        driver.quit()
