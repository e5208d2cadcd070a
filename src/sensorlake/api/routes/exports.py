"""Streamed exports of any range (hot store and lake) as CSV, Parquet or NDJSON.

Rows leave in Arrow record batches straight from DuckDB: nothing holds the whole range in
memory, and each batch is encoded by pyarrow (CSV, Parquet row groups) or polars (NDJSON).
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from typing import Annotated, Literal

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from fastapi import APIRouter, Depends, HTTPException, Query
from starlette.responses import StreamingResponse

from sensorlake.api.access import AccessDep
from sensorlake.api.deps import RuntimeDep
from sensorlake.api.ranges import RangeParams, plan_range
from sensorlake.api.routes.readings import ERRORS, requested_devices
from sensorlake.errors import InputError
from sensorlake.store.base import SERIES_SCHEMA, series_schema

router = APIRouter(prefix="/api/v1", tags=["exports"])

MEDIA = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet",
         "ndjson": "application/x-ndjson"}
EXPORT_ROWS_CAP = 2_000_000_000
BATCH_ROWS = 65_536


class _Sink(io.RawIOBase):
    """A write-only file whose bytes are taken out after each Parquet row group."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.chunks.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out, self.chunks = b"".join(self.chunks), []
        return out


def encode(batches: Iterator[pa.RecordBatch], fmt: str, deadline: float,
           schema: pa.Schema = SERIES_SCHEMA) -> Iterator[bytes]:
    """Bytes of `fmt` for a stream of `schema` batches (SERIES_SCHEMA, plus `quality` with
    include=quality); stops at `deadline`."""
    if fmt == "parquet":
        sink = _Sink()
        writer = pq.ParquetWriter(sink, schema, compression="zstd")
        for batch in batches:
            writer.write_batch(batch)
            yield sink.take()
            if time.monotonic() > deadline:
                break
        writer.close()
        yield sink.take()
        return
    first = True
    for batch in batches:
        if fmt == "csv":
            out = io.BytesIO()
            pacsv.write_csv(pa.Table.from_batches([batch], schema), out,
                            pacsv.WriteOptions(include_header=first))
            yield out.getvalue()
        else:
            frame = pl.from_arrow(batch)
            assert isinstance(frame, pl.DataFrame)
            yield frame.with_columns(pl.col("ts").dt.to_string("%Y-%m-%dT%H:%M:%S%.6fZ")
                                     ).write_ndjson().encode()
        first = False
        if time.monotonic() > deadline:
            break
    if first and fmt == "csv":
        out = io.BytesIO()
        pacsv.write_csv(schema.empty_table(), out)
        yield out.getvalue()


@router.get("/export", summary="Stream readings as CSV, Parquet or NDJSON (lake included)",
            responses={200: {"content": {m: {} for m in MEDIA.values()},
                             "description": "The rows, streamed"}, **ERRORS})
def export(runtime: RuntimeDep, access: AccessDep,
           params: Annotated[RangeParams, Depends()],
           format: Annotated[Literal["csv", "parquet", "ndjson"], Query(
               description="File format")] = "csv",
           device: Annotated[list[str] | None, Query(
               description="Only these devices (repeatable)")] = None) -> StreamingResponse:
    devices = requested_devices(access, device, "export_readings")
    settings = runtime.settings.api
    try:
        params.limit = params.limit or EXPORT_ROWS_CAP
        plan = plan_range(access.tenant_id, devices, params, EXPORT_ROWS_CAP,
                          settings.auto_points, 1)
    except InputError as exc:
        raise HTTPException(422, str(exc)) from None
    query = plan.query
    stream = getattr(runtime.hot, "stream", None)
    batches = (stream(query, BATCH_ROWS, settings.export_timeout_seconds) if stream
               else iter(runtime.hot.readings(query).to_batches(BATCH_ROWS)))
    deadline = time.monotonic() + settings.export_timeout_seconds
    name = f"sensorlake-{access.tenant_id}-{query.start:%Y%m%dT%H%M}-{query.end:%Y%m%dT%H%M}"
    return StreamingResponse(
        encode(batches, format, deadline, series_schema(query)), media_type=MEDIA[format],
        headers={"Content-Disposition": f'attachment; filename="{name}.{format}"'})
