"""Arrow tables in and out of PostgreSQL through COPY, vectorized (pyarrow's CSV codec).

In: the table is written as CSV by pyarrow (C++, shortest round-trip floats) and streamed
into `COPY ... FROM STDIN`; timestamps travel as integer microseconds since the epoch and are
turned back into timestamptz in SQL, so nothing is rounded. Out: `COPY (query) TO STDOUT` in
CSV, parsed by pyarrow with the column types given, timestamps again as microseconds.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

CHUNK = 1 << 20


def to_csv(table: pa.Table) -> bytes:
    """CSV without header; timestamp columns as int64 microseconds."""
    columns = [pc.cast(col, pa.int64()) if pa.types.is_timestamp(col.type) else col
               for col in table.columns]
    out = io.BytesIO()
    pacsv.write_csv(pa.Table.from_arrays(columns, names=table.column_names), out,
                    pacsv.WriteOptions(include_header=False))
    return out.getvalue()


def copy_in(conn: psycopg.Connection, target: str, table: pa.Table) -> None:
    """COPY `table` (columns in target order) into `target` (a trusted identifier)."""
    data = memoryview(to_csv(table))
    with conn.cursor().copy(f"COPY {target} FROM STDIN (FORMAT csv)") as copy:  # type: ignore[arg-type]
        for start in range(0, len(data), CHUNK):
            copy.write(data[start:start + CHUNK])


def us_expr(column: str) -> str:
    """SQL for a timestamptz column as bigint microseconds since the epoch (exact)."""
    return f"(extract(epoch FROM {column}) * 1000000)::bigint"


def copy_out(conn: psycopg.Connection, query: str, params: Sequence[Any],
             schema: pa.Schema) -> pa.Table:
    """Rows of `query` (columns in `schema` order, timestamps selected with `us_expr`)."""
    cur = conn.cursor()
    statement = psycopg.ClientCursor(conn).mogrify(query, params) if params else query
    buffer = io.BytesIO()
    with cur.copy(f"COPY ({statement}) TO STDOUT (FORMAT csv)") as copy:  # type: ignore[arg-type]
        for chunk in copy:
            buffer.write(chunk)
    if buffer.tell() == 0:
        return schema.empty_table()
    wire = {f.name: pa.int64() if pa.types.is_timestamp(f.type) else f.type for f in schema}
    table = pacsv.read_csv(
        io.BytesIO(buffer.getvalue()),
        read_options=pacsv.ReadOptions(column_names=schema.names),
        convert_options=pacsv.ConvertOptions(column_types=wire, strings_can_be_null=True,
                                             quoted_strings_can_be_null=False))
    columns = [table.column(f.name).cast(f.type) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)
