"""ETL import: a client's CSV or Excel file (or a folder of them) into the normal pipeline.

    sensorlake jobs import data/ --mapping mapping.yaml

A mapping file (YAML) says which column is what:

    device: station          # the column holding the device id (or device_value: aq-0001)
    ts: measured_at          # the time column
    ts_format: "%d/%m/%Y %H:%M"   # optional; default ISO 8601 or epoch milliseconds
    timezone: Europe/Amsterdam     # for times without an offset (default UTC)
    sheet: Sheet1                  # Excel: the sheet (default the first)
    metrics:
      PM2.5: pm2_5
      "Temp (F)": {metric: temperature, unit: degF}

Every row is checked on the whole table at once (time, device, numbers, then the pipeline's
own validate and enrich stages); a bad row is reported as `file line N: reason` and kept in
the quarantine, the good rows of the same file go on. Good rows become JSON envelopes (up to
etl.rows_per_envelope rows per device each) appended to the log, whose message id is
`<tenant>/<device>/etl/<file hash>/<first line>-<last line>`: importing the same file again
adds nothing (the log ignores a known id; the hot store a known reading).
"""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pyarrow as pa
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sensorlake.errors import Backpressure, InputError, NotFound, TransientError
from sensorlake.log.base import Envelope
from sensorlake.ops.jobs import JobContext
from sensorlake.process.base import Batch
from sensorlake.process.enrich import EnrichStage
from sensorlake.process.validate import ValidateStage
from sensorlake.store.base import QUARANTINE_SCHEMA

SUFFIXES = (".csv", ".xlsx", ".xlsm")
UNITS: dict[str, tuple[float, float]] = {
    # unit -> (scale, offset) to the catalog's canonical unit: canonical = raw * scale + offset
    "degF": (5 / 9, -32 * 5 / 9), "K": (1.0, -273.15), "Pa": (0.01, 0.0), "kPa": (10.0, 0.0),
    "mg/m3": (1000.0, 0.0), "Wh": (0.001, 0.0), "MWh": (1000.0, 0.0), "kW": (1000.0, 0.0),
    "mV": (0.001, 0.0), "mA": (0.001, 0.0), "percent_fraction": (100.0, 0.0),
}
MAX_ERRORS = 200
ISO_NAIVE = [f"%Y-%m-%d{sep}{t}" for sep in ("T", " ") for t in ("%H:%M:%S%.f", "%H:%M")] \
    + ["%Y-%m-%d"]
ISO_AWARE = [f"%Y-%m-%d{sep}{t}%#z" for sep in ("T", " ") for t in ("%H:%M:%S%.f", "%H:%M")]


class MetricColumn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    metric: str
    unit: str | None = Field(None, description=f"Convert from: {', '.join(UNITS)}")


class Mapping(BaseModel):
    """What each column of the client's file means."""

    model_config = ConfigDict(extra="forbid")
    device: str | None = None
    device_value: str | None = None
    ts: str
    ts_format: str | None = None
    timezone: str = "UTC"
    sheet: str | None = None
    metrics: dict[str, str | MetricColumn]

    def columns(self) -> dict[str, MetricColumn]:
        return {col: m if isinstance(m, MetricColumn) else MetricColumn(metric=m)
                for col, m in self.metrics.items()}


def load_mapping(path: Path) -> Mapping:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        mapping = Mapping.model_validate(data)
    except OSError as exc:
        raise NotFound(f"mapping file {path}: {exc}") from None
    except (yaml.YAMLError, ValidationError) as exc:
        raise InputError(f"mapping file {path} is not valid: {exc} (see "
                         "docs/operations.md#etl-import)") from None
    if (mapping.device is None) == (mapping.device_value is None):
        raise InputError(f"mapping file {path}: give exactly one of `device` (a column) or "
                         "`device_value` (one device for every row)")
    for col, m in mapping.columns().items():
        if m.unit is not None and m.unit not in UNITS:
            raise InputError(f"mapping file {path}: column '{col}': unknown unit '{m.unit}'; "
                             f"known: {', '.join(UNITS)} (or convert before importing)")
    return mapping


def input_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES)
        if not files:
            raise NotFound(f"{path} holds no .csv or .xlsx file")
        return files
    if not path.exists():
        raise NotFound(f"{path} does not exist")
    if path.suffix.lower() not in SUFFIXES:
        raise InputError(f"{path}: only .csv, .xlsx and .xlsm files can be imported")
    return [path]


def read_table(path: Path, sheet: str | None) -> tuple[pl.DataFrame, list[bytes]]:
    """(every cell as text, with a `_line` column; the raw line of each row)."""
    if path.suffix.lower() == ".csv":
        data = path.read_bytes()
        try:
            frame = pl.read_csv(data, infer_schema=False)
        except pl.exceptions.PolarsError as exc:
            raise InputError(f"{path.name}: cannot read it as CSV: {exc}") from None
        lines = data.splitlines()
        frame = frame.with_row_index("_line", offset=2)
        return frame, lines
    from openpyxl import load_workbook
    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:
        raise InputError(f"{path.name}: cannot read it as Excel: {exc}") from None
    try:
        if sheet is not None and sheet not in book.sheetnames:
            raise InputError(f"{path.name}: no sheet '{sheet}' (sheets: "
                             f"{', '.join(book.sheetnames)})")
        rows = list((book[sheet] if sheet else book.worksheets[0]).iter_rows(values_only=True))
    finally:
        book.close()
    if not rows:
        return pl.DataFrame({"_line": []}), []
    header = [str(h) if h is not None else f"column{i + 1}" for i, h in enumerate(rows[0])]
    body = [[_cell(v) for v in r] for r in rows[1:]]
    frame = pl.DataFrame(body, schema=dict.fromkeys(header, pl.String), orient="row")
    raw = [b""] + [orjson.dumps(dict(zip(header, r, strict=False))) for r in body]
    return frame.with_row_index("_line", offset=2), [b"", *raw]


def _cell(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def parse_times(col: pl.Expr, fmt: str | None, zone: str) -> pl.Expr:
    """UTC timestamps from text: epoch ms, ISO 8601 with or without an offset, or `fmt`."""
    text = col.str.strip_chars()
    naive = pl.coalesce([text.str.to_datetime(f, strict=False) for f in ISO_NAIVE])
    aware = pl.coalesce([text.str.to_datetime(f, strict=False, time_zone="UTC")
                         for f in ISO_AWARE])
    if fmt:  # the client's format first; ISO 8601 too (Excel date cells arrive as ISO)
        naive = pl.coalesce(text.str.to_datetime(fmt, strict=False), naive)
        if "%z" in fmt:
            aware = pl.coalesce(text.str.to_datetime(fmt, strict=False, time_zone="UTC"),
                                aware)
    local = naive.dt.replace_time_zone(zone, non_existent="null", ambiguous="earliest") \
        .dt.convert_time_zone("UTC")
    epoch = pl.from_epoch(text.str.to_integer(strict=False), time_unit="ms") \
        .dt.replace_time_zone("UTC")
    has_offset = text.str.contains(r"(Z|[+-]\d\d:?\d\d)$")
    parsed = pl.when(text.str.contains(r"^\d{11,14}$")).then(epoch)
    parsed = parsed.when(has_offset).then(aware)
    return parsed.otherwise(local).dt.cast_time_unit("us")


def map_rows(frame: pl.DataFrame, mapping: Mapping,
             name: str) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    """(readings: _line, device_id, ts, metric, value; bad cells and rows with reasons)."""
    columns = mapping.columns()
    wanted = [c for c in (mapping.device, mapping.ts, *columns) if c]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        shown = ", ".join(c for c in frame.columns if c != "_line")
        raise InputError(f"{name} has no column {', '.join(repr(c) for c in missing)} "
                         f"(its columns: {shown}); fix the mapping file")
    device = pl.col(mapping.device) if mapping.device else pl.lit(mapping.device_value)
    base = frame.select(
        "_line", device.cast(pl.String).str.strip_chars().alias("device_id"),
        pl.col(mapping.ts).alias("_ts_text"),
        parse_times(pl.col(mapping.ts), mapping.ts_format, mapping.timezone).alias("ts"),
        *[pl.col(c).alias(f"_m{i}") for i, c in enumerate(columns)])
    bad: list[dict[str, Any]] = []
    no_device = base.filter(pl.col("device_id").is_null() | (pl.col("device_id") == ""))
    bad += [_bad(r["_line"], None, mapping.device, None, f"{name} line {r['_line']}: column "
                 f"'{mapping.device}' is empty; every row needs a device id")
            for r in no_device.iter_rows(named=True)]
    base = base.join(no_device.select("_line"), on="_line", how="anti")
    no_ts = base.filter(pl.col("ts").is_null())
    hint = f"the format {mapping.ts_format}" if mapping.ts_format else \
        "ISO 8601 (2026-11-23 14:00:00) or epoch milliseconds; set ts_format otherwise"
    bad += [_bad(r["_line"], r["device_id"], mapping.ts, r["_ts_text"],
                 f"{name} line {r['_line']}: column '{mapping.ts}' value '{r['_ts_text']}' "
                 f"is not a time in {hint}" + (" (or it does not exist in "
                                                f"{mapping.timezone})"
                                                if mapping.timezone != "UTC" else ""))
            for r in no_ts.iter_rows(named=True)]
    base = base.filter(pl.col("ts").is_not_null())
    long = base.unpivot(index=["_line", "device_id", "ts"],
                        on=[f"_m{i}" for i in range(len(columns))],
                        variable_name="_col", value_name="text").filter(
        pl.col("text").is_not_null() & (pl.col("text").str.strip_chars() != ""))
    names = list(columns)
    meta = pl.DataFrame({"_col": [f"_m{i}" for i in range(len(names))], "column": names,
                         "metric": [columns[c].metric for c in names],
                         "scale": [UNITS[columns[c].unit][0] if columns[c].unit else 1.0
                                   for c in names],
                         "offset": [UNITS[columns[c].unit][1] if columns[c].unit else 0.0
                                    for c in names]})
    long = long.join(meta, on="_col").with_columns(
        pl.col("text").str.strip_chars().cast(pl.Float64, strict=False).alias("raw"))
    not_number = long.filter(pl.col("raw").is_null())
    bad += [_bad(r["_line"], r["device_id"], r["metric"], r["text"], f"{name} line "
                 f"{r['_line']}: column '{r['column']}' value '{r['text']}' is not a number")
            for r in not_number.iter_rows(named=True)]
    readings = long.filter(pl.col("raw").is_not_null()).select(
        "_line", "device_id", "ts", "metric",
        (pl.col("raw") * pl.col("scale") + pl.col("offset")).alias("value"))
    return readings.sort("_line", "metric"), bad


def _bad(line: int, device: str | None, field: str | None, value: Any,
         reason: str) -> dict[str, Any]:
    return {"line": line, "device_id": device or "", "field": field,
            "value": None if value is None else str(value)[:200], "reason": reason}


def check_with_stages(readings: pl.DataFrame, ctx_: Any, tenant: str,
                      name: str) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    """Run the pipeline's validate and enrich stages, so bad values and unregistered devices
    are reported with their line now; returns the readings they keep."""
    if readings.height == 0:
        return readings, []
    now = datetime.now(UTC)
    table = pa.table({
        "tenant": pa.array([tenant] * readings.height, pa.string()),
        "device_id": readings["device_id"].to_arrow(), "metric": readings["metric"].to_arrow(),
        "ts": readings["ts"].to_arrow(), "value": readings["value"].to_arrow(),
        "quality": pa.array([0] * readings.height, pa.int16()),
        "received_at": pa.array([now] * readings.height, pa.timestamp("us", tz="UTC")),
        "lat": pa.nulls(readings.height, pa.float64()),
        "lon": pa.nulls(readings.height, pa.float64()),
        "msg_id": readings["_line"].cast(pl.String).to_arrow(),
    })
    batch = Batch(table.cast(Batch().readings.schema))
    for stage in (ValidateStage(), EnrichStage()):
        batch = stage.process(batch, ctx_)
    rejects = pl.from_arrow(batch.rejects)
    assert isinstance(rejects, pl.DataFrame)
    bad = [_bad(int(r["msg_id"]), r["device_id"], r["field"], r["value"],
                f"{name} line {r['msg_id']}: {r['reason']}")
           for r in rejects.iter_rows(named=True)]
    keys = rejects.select(pl.col("msg_id").cast(pl.Int64).alias("_line"),
                          pl.col("field").alias("metric"))
    kept = readings.with_columns(pl.col("_line").cast(pl.Int64)).join(
        keys, on=["_line", "metric"], how="anti")
    return kept, bad


def envelopes_for(readings: pl.DataFrame, tenant: str, file_hash: str, source: str,
                  rows_per_envelope: int) -> list[Envelope]:
    """JSON batch envelopes, per device in line order; ids from file hash and line range.
    The JSON text is built on whole columns (polars); Python only wraps each envelope."""
    if readings.height == 0:
        return []
    pair = pl.concat_str(pl.lit('"'), pl.col("metric"), pl.lit('":'),
                         pl.col("value").cast(pl.String))
    entries = (readings.sort("_line", "metric")
               .group_by("_line", "device_id", "ts", maintain_order=True)
               .agg(pair.str.join(",").alias("pairs"))
               .with_columns(pl.concat_str(
                   pl.lit('{"ts":"'), pl.col("ts").dt.to_string("%Y-%m-%dT%H:%M:%S%.fZ"),
                   pl.lit('","readings":{'), pl.col("pairs"), pl.lit("}}")).alias("entry"))
               .with_columns((pl.int_range(pl.len()).over("device_id") // rows_per_envelope)
                             .alias("chunk")))
    chunks = (entries.group_by("device_id", "chunk", maintain_order=True)
              .agg(pl.col("_line").first().alias("first"), pl.col("_line").last().alias("last"),
                   pl.col("entry").str.join(",").alias("entries")))
    received = time.time_ns() // 1000
    return [Envelope(msg_id=f"{tenant}/{device}/etl/{file_hash}/{first}-{last}", tenant=tenant,
                     device_id=device, source=source, codec="envelope",
                     payload=(f'{{"device":{orjson.dumps(device).decode()},"batch":['
                              f"{body}]}}").encode(), received_at_us=received)
            for device, first, last, body in chunks.select(
                "device_id", "first", "last", "entries").iter_rows()]


def quarantine_rows(bad: list[dict[str, Any]], tenant: str, file_hash: str, source: str,
                    lines: list[bytes]) -> pa.Table:
    now = datetime.now(UTC)
    rows = [{"msg_id": f"{tenant}/{b['device_id'] or '?'}/etl/{file_hash}/line-{b['line']}",
             "tenant": tenant, "device_id": b["device_id"], "stage": "etl",
             "field": b["field"], "value": b["value"], "reason": b["reason"],
             "source": source, "received_at": now,
             "payload": lines[b["line"] - 1] if 0 < b["line"] <= len(lines) else b""}
            for b in bad]
    return pa.Table.from_pylist(rows, schema=QUARANTINE_SCHEMA)


def append_all(log: Any, envelopes: list[Envelope], ctx: JobContext | None = None,
               chunk: int = 1000) -> tuple[int, int]:
    """Append in chunks, waiting out backpressure and an unreachable log (NATS restarting:
    the same message ids are appended again, so nothing doubles); (new, duplicates)."""
    new = dup = 0
    for start in range(0, len(envelopes), chunk):
        part = envelopes[start:start + chunk]
        while True:
            try:
                result = log.append(part)
                break
            except TransientError as exc:
                if ctx is not None:
                    what = "log full" if isinstance(exc, Backpressure) else "log unavailable"
                    ctx.progress(message=f"{what}, waiting: {exc}", force=True)
                time.sleep(max(1.0, getattr(exc, "retry_after", 1.0)))
        new, dup = new + result.accepted, dup + result.duplicates
    return new, dup


def run_import(ctx: JobContext) -> dict[str, Any]:
    """The `import` job: params path, mapping, tenant (default default_tenant)."""
    rt = ctx.runtime
    if not ctx.params.get("path") or not ctx.params.get("mapping"):
        raise InputError("the import job needs params path=FILE_OR_FOLDER and mapping=FILE "
                         "(`sensorlake jobs import PATH --mapping FILE`)")
    tenant = ctx.params.get("tenant") or rt.settings.default_tenant
    mapping = load_mapping(Path(ctx.params["mapping"]))
    files = input_files(Path(ctx.params["path"]))
    summary: dict[str, Any] = {"files": [], "rows": 0, "rows_done": 0, "rows_rejected": 0,
                               "envelopes_new": 0, "envelopes_known": 0, "errors": []}
    for index, path in enumerate(files):
        ctx.progress(done=index, total=len(files), message=f"reading {path.name}", force=True)
        file_hash = hashlib.blake2b(path.read_bytes(), digest_size=12).hexdigest()
        source = f"etl:{path.name}"
        try:
            frame, lines = read_table(path, mapping.sheet)
            readings, bad = map_rows(frame, mapping, path.name)
            readings, more = check_with_stages(readings, rt.context(), tenant, path.name)
        except InputError as exc:
            summary["errors"].append(str(exc))
            summary["files"].append({"file": str(path), "error": str(exc)})
            continue
        bad += more
        if bad:
            rt.quarantine.write(quarantine_rows(bad, tenant, file_hash, source, lines))
        envelopes = envelopes_for(readings, tenant, file_hash, source,
                                  rt.settings.etl.rows_per_envelope)
        new, known = append_all(rt.log, envelopes, ctx)
        done_lines = readings["_line"].n_unique() if readings.height else 0
        rejected_lines = len({b["line"] for b in bad})
        summary["rows"] += frame.height
        summary["rows_done"] += done_lines
        summary["rows_rejected"] += rejected_lines
        summary["envelopes_new"] += new
        summary["envelopes_known"] += known
        reasons = dict.fromkeys(b["reason"] for b in sorted(bad, key=lambda b: b["line"]))
        summary["errors"] += list(reasons)[:max(0, MAX_ERRORS - len(summary["errors"]))]
        summary["files"].append({"file": str(path), "rows": frame.height,
                                 "rows_done": done_lines, "rows_rejected": rejected_lines,
                                 "readings": readings.height, "envelopes_new": new})
        ctx.progress(done=index + 1, total=len(files), rows_done=summary["rows_done"],
                     rows_rejected=summary["rows_rejected"], message=f"{path.name} done",
                     force=True)
    if summary["rows_done"] == 0 and summary["errors"]:
        raise InputError(f"nothing imported: {summary['errors'][0]}"
                         + (f" (and {len(summary['errors']) - 1} more errors)"
                            if len(summary["errors"]) > 1 else ""))
    return summary
