"""`sensorlake users`, `grants` and `tokens` from the command line: what they store is what
the policies then use, and every change is in the audit log."""

from __future__ import annotations

from pathlib import Path

import orjson
from typer.testing import CliRunner

from sensorlake.auth.audit import AuditLog
from sensorlake.catalog import Catalog
from sensorlake.cli import app

runner = CliRunner()


def run(data: Path, *args: str, env: dict[str, str] | None = None) -> str:
    result = runner.invoke(app, [*args, "--data-dir", str(data)], env=env)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_users_grants_tokens_and_audit(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run(data, "devices", "add", "meter-1", "--type", "energy_meter")
    run(data, "devices", "add", "aq-1", "--public")
    env = {"SENSORLAKE_PASSWORD": "a long password"}
    run(data, "users", "add", "grid", "--role", "utility", "--window", "22:00-02:00", env=env)
    run(data, "users", "add", "nina", "--role", "guest", env=env)
    users = orjson.loads(run(data, "users", "list", "-f", "json"))
    assert {u["name"]: u["window"] for u in users} == {"grid": "22:00-02:00", "nina": ""}

    grant = run(data, "grants", "add", "guest", "--user", "nina", "--device", "aq-1").strip()
    run(data, "grants", "add", "utility", "--user", "grid")
    wrong = runner.invoke(app, ["grants", "add", "utility", "--user", "nina", "--data-dir",
                                str(data)])
    assert wrong.exit_code == 1 and "role guest" in wrong.output
    listed = orjson.loads(run(data, "grants", "list", "-f", "json"))
    assert [(g["template"], g["user"], g["device"]) for g in listed] == [
        ("guest", "nina", "aq-1"), ("utility", "grid", "(whole tenant)")]
    run(data, "grants", "revoke", grant)
    assert len(orjson.loads(run(data, "grants", "list", "-f", "json"))) == 1

    token = run(data, "tokens", "create", "--role", "owner", "--scope", "read").strip()
    assert token.startswith("slk_")
    tokens = orjson.loads(run(data, "tokens", "list", "-f", "json"))
    assert tokens[0]["scopes"] == "read"
    bad = runner.invoke(app, ["tokens", "create", "--role", "ingest", "--scope", "read",
                              "--data-dir", str(data)])
    assert bad.exit_code == 1 and "not available" in bad.output

    run(data, "users", "remove", "grid")
    assert orjson.loads(run(data, "grants", "list", "-f", "json")) == []

    catalog = Catalog(data / "catalog.db")
    actions = [r["action"] for r in AuditLog(catalog).list("default")][::-1]
    catalog.close()
    assert actions == ["device.add", "device.add", "user.add", "user.add", "grant.add",
                       "grant.add", "grant.revoke", "token.create", "user.remove"]
    assert token[4:] not in (data / "catalog.db").read_bytes().decode("latin-1")
