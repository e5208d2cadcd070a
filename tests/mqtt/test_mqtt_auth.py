"""Broker auth and ACL from the registry, and ingest's own re-check of the device.

Device A may publish only on sensorlake/A/up and read only sensorlake/A/ack; it can neither
publish on B's topic nor claim to be B inside an envelope on its own topic; anonymous and
wrong-password clients are refused. A revoked token stops working after a regeneration.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
from mqtt_support import Broker, Device

from sensorlake.auth.tokens import Role, TokenStore
from sensorlake.catalog import Catalog
from sensorlake.config import load_settings
from sensorlake.ingest.broker_auth import issue_device_token
from sensorlake.registry import Device as Registered
from sensorlake.registry import DeviceRegistry


def wait_for(check: Callable[[], object], timeout: float = 30, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def prepare(data: Path) -> dict[str, str]:
    catalog = Catalog(data / "catalog.db")
    try:
        DeviceRegistry(catalog).upsert([Registered(id="dev-a"), Registered(id="dev-b")])
        tokens = {d: issue_device_token(catalog, "default", d) for d in ("dev-a", "dev-b")}
        tokens["owner"], _ = TokenStore(catalog).create(Role.OWNER, "default")
    finally:
        catalog.close()
    return tokens


def reading(device: str, seq: int) -> dict:
    return {"device": device, "seq": seq, "ts": 1_795_435_200_000 + seq * 1000,
            "readings": {"pm2_5": 10.0 + seq}}


def test_device_cannot_publish_as_another_and_anonymous_is_refused(
        tmp_path: Path, make_broker: Callable[..., Broker], make_server: Callable) -> None:
    data = tmp_path / "data"
    tokens = prepare(data)
    broker = make_broker(load_settings(data_dir=data))
    broker.configure()
    broker.start()
    server = make_server(data, SENSORLAKE_MQTT__URL=broker.url)
    server.start()
    owner = {"Authorization": f"Bearer {tokens['owner']}"}

    def status() -> dict:
        return httpx.get(f"{server.url}/api/v1/status", headers=owner, timeout=10).json()

    wait_for(lambda: status()["mqtt"]["connected"], what="ingest connected")

    a = Device(broker, "dev-a", tokens["dev-a"])
    wait_for(a.connected.is_set, what="dev-a connected")
    a.publish("sensorlake/dev-a/up", reading("dev-a", 1))
    a.publish("sensorlake/dev-a/up", reading("dev-b", 2))  # ingest refuses it
    a.publish("sensorlake/dev-a/up", reading("dev-a", 2))
    a.wait_watermark(2)
    connects = a.connects
    a.client.publish("sensorlake/dev-b/up", b'{"device": "dev-b", "seq": 1, '
                     b'"readings": {"pm2_5": 99}}', qos=1)  # the broker's ACL drops it
    wait_for(lambda: a.connects > connects, what="dev-a reconnected")  # and disconnects A
    a.publish("sensorlake/dev-a/up", reading("dev-a", 3))
    a.wait_watermark(3)

    anonymous = Device(broker, "anon", None)
    wrong = Device(broker, "dev-b", "slk_not-the-token")
    wait_for(lambda: anonymous.refused and wrong.refused, what="refusals")
    assert "authori" in anonymous.refused.lower() and "authori" in wrong.refused.lower()
    assert not anonymous.connected.is_set() and not wrong.connected.is_set()

    def drained() -> dict | None:
        s = status()
        done = s["worker"]["processed_offset"] == s["log"]["last_offset"] >= 3
        return s if done else None

    final = wait_for(drained, what="worker drained")
    assert final["mqtt"]["refused"] == 1, final["mqtt"]
    assert not [p for p in final["problems"] if "MQTT" in p["what"]], final["problems"]
    metrics = httpx.get(f"{server.url}/metrics", headers=owner, timeout=10).text
    assert 'sensorlake_ingest_total{kind="refused",source="mqtt"} 1.0' in metrics, metrics

    def readings_of(device: str) -> list[dict]:
        response = httpx.get(f"{server.url}/api/v1/devices/{device}/readings", headers=owner,
                             params={"metric": "pm2_5", "from": "2026-01-01T00:00:00Z"},
                             timeout=10)
        assert response.status_code == 200, response.text
        return response.json()["results"]

    assert [r["value"] for r in readings_of("dev-a")] == [11.0, 12.0, 13.0]
    assert readings_of("dev-b") == []
    quarantine = httpx.get(f"{server.url}/api/v1/quarantine", headers=owner, timeout=10).json()
    reasons = [row["reason"] for row in quarantine["results"]]
    assert len(reasons) == 1 and "does not match the device 'dev-a'" in reasons[0], reasons

    # revoke dev-a's token, regenerate and reload: dev-a can no longer connect
    catalog = Catalog(data / "catalog.db")
    store = TokenStore(catalog)
    store.revoke(next(t.id for t in store.list("default") if t.device_id == "dev-a"))
    catalog.close()
    a.close()
    broker.configure()
    broker.reload()
    again = Device(broker, "dev-a", tokens["dev-a"])
    wait_for(lambda: again.refused, what="revoked token refused")
    b = Device(broker, "dev-b", tokens["dev-b"])
    wait_for(b.connected.is_set, what="dev-b still connects")
    for client in (anonymous, wrong, again, b):
        client.close()
    broker.kill9()  # `status` says what is wrong and what to do
    problems = wait_for(lambda: [p for p in status()["problems"]
                                 if "MQTT ingest is not connected" in p["what"]],
                        what="a status problem for the lost broker")
    assert "mosquitto-config" in problems[0]["do"]
    assert server.stop() == 0, server.output()
