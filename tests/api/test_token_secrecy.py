"""Tokens never appear in clear: not in the catalog (tokens table, WAL, audit), not in any
log line, not in error answers, whatever the request (valid, revoked, malformed)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from world import World

from sensorlake.auth.tokens import TOKEN_PREFIX, Role, hash_token


def test_tokens_are_hashed_and_never_logged(tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    world = World(tmp_path / "data", start_worker=True)
    try:
        rt = world.runtime
        tokens = [t for tenant in world.tenants.values() for t in tenant.tokens.values() if t]
        extra, info = rt.tokens.create(Role.OWNER, "a", label="to revoke")
        tokens.append(extra)
        client = world.client
        for token in tokens:
            headers = {"Authorization": f"Bearer {token}"}
            client.get("/api/v1/latest", headers=headers)
            client.post("/api/v1/ingest", json={"device": "a-aq-1", "readings": {"pm2_5": 1.0}},
                        headers=headers)
        created = client.post("/api/v1/tokens", json={"role": "ingest"},
                              headers={"Authorization": f"Bearer {tokens[0]}"})
        assert created.status_code == 201
        tokens.append(created.json()["token"])
        rt.tokens.revoke(info.id)
        answers = []
        for token in (extra, extra + "x", extra.replace(TOKEN_PREFIX, "nope_")):
            response = client.get("/api/v1/devices", headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 401
            answers.append(response.text)
        rt.catalog.execute("PRAGMA wal_checkpoint(PASSIVE)")
        stored = b"".join(p.read_bytes() for p in (tmp_path / "data").rglob("*")
                          if p.is_file() and p.suffix != ".parquet")
        logs = caplog.text + "\n".join(answers)
        for token in tokens:
            secret = token[len(TOKEN_PREFIX):]
            assert secret.encode() not in stored, "a clear token is on disk"
            assert secret not in logs, "a clear token is in a log line or an answer"
        rows = rt.catalog.execute("SELECT hash FROM tokens")
        assert {r[0] for r in rows} >= {hash_token(t) for t in tokens}
        assert all(len(r[0]) == 64 for r in rows)
    finally:
        world.close()
