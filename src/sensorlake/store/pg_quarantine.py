"""The server profile's quarantine: the `quarantine` table next to the readings.

Same promises as the SQLite quarantine: idempotent on (msg_id, stage, field, reason), a NULL
field stored as '', newest first. The server worker writes rejects inside the same
transaction as the readings of their batch (`insert_rejects`), so a message is either fully
stored - readings, rejects, processed mark - or not at all.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

import psycopg
import pyarrow as pa
import pyarrow.compute as pc

from sensorlake.config import PostgresSettings
from sensorlake.store.base import QUARANTINE_SCHEMA
from sensorlake.store.memory import QUARANTINE_LIST_SCHEMA
from sensorlake.store.pg_schema import TRANSIENT, connect, migrate, unavailable

INSERT = """
INSERT INTO quarantine (msg_id, tenant, device_id, stage, field, value, reason, source,
                        received_at, payload)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (msg_id, stage, field, reason) DO NOTHING
"""


def insert_rejects(conn: psycopg.Connection, rejects: pa.Table,
                   fresh: Collection[int] | None = None) -> int:
    """Insert QUARANTINE_SCHEMA rows (only those whose `log_offset` is in `fresh`, when
    both are given) in the caller's transaction; returns rows newly stored."""
    if fresh is not None and "log_offset" in rejects.column_names:
        rejects = rejects.filter(pc.is_in(rejects.column("log_offset"),
                                          pa.array(sorted(fresh), pa.int64())))
    if rejects.num_rows == 0:
        return 0
    cols = rejects.select(QUARANTINE_SCHEMA.names).cast(QUARANTINE_SCHEMA).to_pydict()
    rows = [(cols["msg_id"][i], cols["tenant"][i], cols["device_id"][i], cols["stage"][i],
             cols["field"][i] or "", cols["value"][i], cols["reason"][i], cols["source"][i],
             cols["received_at"][i], cols["payload"][i]) for i in range(rejects.num_rows)]
    with conn.cursor() as cur:
        cur.executemany(INSERT, rows)
        return max(cur.rowcount, 0)


class PostgresQuarantine:
    """Quarantine protocol on PostgreSQL; one connection guarded by psycopg's own lock."""

    def __init__(self, settings: PostgresSettings) -> None:
        self.settings = settings
        self._conn: psycopg.Connection | None = None
        with self._connection() as conn:
            migrate(conn, settings.partition_days)

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.settings, autocommit=True)
        return self._conn

    def _run(self, what: str, work):  # type: ignore[no-untyped-def]
        try:
            return work(self._connection())
        except TRANSIENT as exc:
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            raise unavailable(f"quarantine {what}", exc) from exc

    def write(self, rejects: pa.Table) -> int:
        def work(conn: psycopg.Connection) -> int:
            with conn.transaction():
                return insert_rejects(conn, rejects)
        return int(self._run("write", work))

    def _where(self, tenant: str | None, since: datetime | None) -> tuple[str, list[object]]:
        where, params = [], []
        if tenant is not None:
            where.append("tenant = %s")
            params.append(tenant)
        if since is not None:
            where.append("quarantined_at >= %s")
            params.append(since)
        return (" WHERE " + " AND ".join(where)) if where else "", params

    def list(self, tenant: str | None = None, limit: int = 100,
             since: datetime | None = None) -> pa.Table:
        where, params = self._where(tenant, since)
        names = [*QUARANTINE_SCHEMA.names, "quarantined_at"]
        text = (f"SELECT {', '.join(names)} FROM quarantine{where} "
                "ORDER BY quarantined_at DESC, id DESC LIMIT %s")
        rows = self._run("list", lambda c: c.execute(text, [*params, max(int(limit), 0)])
                         .fetchall())
        data = [dict(zip(names, r, strict=True)) for r in rows]
        for row in data:
            row["field"] = row["field"] or None
        return pa.Table.from_pylist(data, schema=QUARANTINE_LIST_SCHEMA)

    def count(self, tenant: str | None = None) -> int:
        where, params = self._where(tenant, None)
        row = self._run("count", lambda c: c.execute(
            f"SELECT count(*) FROM quarantine{where}", params).fetchone())
        return int(row[0])

    def reasons(self, tenant: str | None = None, limit: int = 10) -> list[tuple[str, int]]:
        where, params = self._where(tenant, None)
        text = (f"SELECT reason, count(*) AS n FROM quarantine{where} "
                "GROUP BY reason ORDER BY n DESC, reason LIMIT %s")
        rows = self._run("reasons", lambda c: c.execute(text, [*params, max(int(limit), 0)])
                         .fetchall())
        return [(str(r), int(n)) for r, n in rows]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
