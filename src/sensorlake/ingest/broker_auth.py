"""Device credentials for the MQTT broker.

A device's broker username is its device id and its password is an ingest token bound to
that device (`sensorlake tokens create --role ingest --device ID`): one secret for HTTP and
MQTT. The token is never stored in clear; next to its SHA-256 (HTTP) the catalog keeps a
salted PBKDF2-SHA512 hash in the format of Mosquitto 2.0's password file (`$7$`), so
`sensorlake mosquitto-config` can write the password file without knowing any token.
The newest active token of a device is its broker password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sensorlake.auth.tokens import Role, TokenInfo, TokenStore
from sensorlake.catalog import Catalog

ITERATIONS = 101
"""Mosquitto's default. The secrets are 256-bit random tokens, so more rounds add nothing
but CONNECT latency."""
SALT_BYTES = 12

SCHEMA = """CREATE TABLE IF NOT EXISTS broker_credentials (
    token_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, device_id TEXT NOT NULL,
    pbkdf2 TEXT NOT NULL, created_at TEXT NOT NULL)"""


def mosquitto_hash(password: str, salt: bytes | None = None,
                   iterations: int = ITERATIONS) -> str:
    """`$7$<iterations>$<salt b64>$<hash b64>`: what `mosquitto_passwd` writes (2.0)."""
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return (f"$7${iterations}${base64.b64encode(salt).decode()}$"
            f"{base64.b64encode(digest).decode()}")


def verify_mosquitto_hash(password: str, encoded: str) -> bool:
    _, kind, iterations, salt, digest = encoded.split("$")
    if kind != "7":
        return False
    again = mosquitto_hash(password, base64.b64decode(salt), int(iterations))
    return hmac.compare_digest(again.rsplit("$", 1)[1], digest)


@dataclass(frozen=True)
class BrokerUser:
    username: str
    pbkdf2: str


class BrokerCredentials:
    """The broker hashes of device tokens, in the catalog."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        catalog.write([(SCHEMA, ())], bump=False)

    def remember(self, info: TokenInfo, token: str) -> None:
        """Keep the broker hash of a freshly created device-bound ingest token."""
        if info.device_id is None or info.role is not Role.INGEST:
            return
        self.catalog.write([(
            "INSERT OR REPLACE INTO broker_credentials VALUES (?, ?, ?, ?, ?)",
            (info.id, info.tenant, info.device_id, mosquitto_hash(token),
             datetime.now(UTC).isoformat()))], bump=False)

    def device_users(self, tenant: str) -> list[BrokerUser]:
        """One user per registered device of `tenant` with an active token: its newest."""
        now = datetime.now(UTC).isoformat()
        rows = self.catalog.execute(
            """SELECT b.device_id, b.pbkdf2 FROM broker_credentials b
               JOIN tokens t ON t.id = b.token_id
               JOIN devices d ON d.tenant = b.tenant AND d.id = b.device_id
               WHERE b.tenant = ? AND t.revoked_at IS NULL
                 AND (t.expires_at IS NULL OR t.expires_at > ?)
               ORDER BY b.device_id, t.created_at""", (tenant, now))
        newest = {device: encoded for device, encoded in rows}
        return [BrokerUser(device, encoded) for device, encoded in sorted(newest.items())]


def issue_device_token(catalog: Catalog, tenant: str, device_id: str,
                       label: str = "") -> str:
    """Create an ingest token bound to `device_id` and keep its broker hash; the token is
    the device's HTTP bearer token and its MQTT password (username = device id)."""
    token, info = TokenStore(catalog).create(Role.INGEST, tenant, device_id, label)
    BrokerCredentials(catalog).remember(info, token)
    return token
