"""`POST /api/v2/write`: InfluxDB line protocol in, with Telegraf's contract.

Telegraf drops a whole batch on any 4xx but 429, and retries 429/502/503/504 honouring
Retry-After. So: 204 only after the durable append; a batch with bad lines stores the good
ones, quarantines the bad ones and still answers 204 (with the counts in
`X-Sensorlake-Lines-Accepted` / `X-Sensorlake-Lines-Rejected`); 503 + Retry-After when the
log is full; 400 only when no line at all is usable (those lines are quarantined too).

Ingest does not decode values. Per request it runs two regular expressions over all lines at
once (pyarrow's RE2 kernels): the line-protocol grammar (`lp_grammar.POINT_RE`), to count
bad lines and keep them apart, and one that extracts the device tag, which authorization
needs (a token bound to a device may only write as that device). Good lines are grouped by
device into envelopes of at most `line_protocol.lines_per_envelope` lines, raw bytes kept.
A request of many devices with few lines each (on average under a quarter of
`lines_per_envelope`, such as a gateway's latest interval of 1,000 devices) is cut instead
into envelopes of `lines_per_envelope` lines in the order sent, whose device id is `*`
(MANY_DEVICES): each line names its device, and per-envelope costs (log row, message id,
worker bookkeeping) are paid once per 200 lines, not once per 5. Each bad line becomes its
own envelope, so the quarantine keeps exactly its bytes. The worker's `line_protocol*`
codec does the rest.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import polars as pl

from sensorlake.auth.tokens import Action, Principal, authorize
from sensorlake.config import LineProtocolSettings
from sensorlake.decode.lineprotocol import CODEC_NAMES, MANY_DEVICES, line_devices
from sensorlake.decode.lp_grammar import (
    POINT_RE,
    POINT_WITH_TS_RE,
    SIMPLE_POINT_RE,
    SKIP_RE,
)
from sensorlake.errors import AuthError, InputError
from sensorlake.ingest.body import BodyTooLarge, read_body
from sensorlake.ingest.http import Reply
from sensorlake.ingest.submit import append, bearer_or_basic
from sensorlake.log.base import Envelope
from sensorlake.registry import DEVICE_ID_PATTERN

ACCEPTED_HEADER = "X-Sensorlake-Lines-Accepted"
REJECTED_HEADER = "X-Sensorlake-Lines-Rejected"


@dataclass
class Scan:
    """A request body turned into log envelopes, with the line counts for the answer."""

    envelopes: list[Envelope] = field(default_factory=list)
    good: int = 0
    bad: int = 0


def check_lines(lines: pl.Series, device_tag: str, fallback_tag: str) -> pl.DataFrame:
    """Per line: `skip` (blank or comment), `point` (inside the grammar), `named` (the
    device tag, else the fallback tag, as written) and `has_ts`. Lines without backslash or
    quote (nearly all) take cheaper expressions of the same grammar; the others the full one."""
    frame = pl.DataFrame({"line": lines}).with_row_index("row").with_columns(
        (pl.col("line").str.contains("\\", literal=True)
         | pl.col("line").str.contains('"', literal=True)).fill_null(False).alias("special"))
    parts = []
    for special, point, has_ts in ((False, SIMPLE_POINT_RE, r" -?[0-9]+ *$"),
                                   (True, POINT_RE, POINT_WITH_TS_RE)):
        part = frame.filter(pl.col("special") == special)
        if part.height:
            parts.append(part.with_columns(
                pl.col("line").str.contains(point).alias("point"),
                line_devices(part["line"], device_tag, fallback_tag, not special)
                .alias("named"),
                pl.col("line").str.contains(has_ts).alias("has_ts")))
    checked = pl.concat(parts).sort("row") if len(parts) > 1 else parts[0]
    return checked.select(
        pl.col("line").str.contains(SKIP_RE).fill_null(False).alias("skip"),
        pl.col("point").fill_null(False), "named", pl.col("has_ts").fill_null(False))


def scan_body(body: bytes, principal: Principal, settings: LineProtocolSettings,
              precision: str, received_at_us: int, source: str) -> Scan:
    """Split a body into envelopes: one per device per `lines_per_envelope` good lines (or
    of many devices, see the module's docstring), one per bad line. Raises AuthError(403)
    if a device-bound token names another device."""
    raw = body.split(b"\n")
    try:
        text = pl.Series(body.decode("utf-8").split("\n"), dtype=pl.String)
    except UnicodeDecodeError:  # a line that is not UTF-8 is a bad line (null here)
        text = pl.Series([_utf8(line) for line in raw], dtype=pl.String)
    checked = check_lines(text.str.strip_suffix("\r"), settings.device_tag,
                          settings.fallback_tag)
    named = checked["named"]
    bound = principal.device_id
    if bound is not None:
        others = named.filter(checked["point"] & (named != bound)).drop_nulls()
        if len(others):
            raise AuthError(f"this token is bound to device '{bound}' and cannot send as "
                            f"'{others[0]}'", status=403)
    devices = named.fill_null(bound or "")
    valid_id = devices.str.contains(DEVICE_ID_PATTERN)
    frame = pl.DataFrame({"raw": text, "device": devices, "valid_id": valid_id,
                          "good": checked["point"] & valid_id, "skip": checked["skip"],
                          "has_ts": checked["has_ts"]}).with_row_index("row")
    good = frame.filter("good")
    bad = frame.filter(~pl.col("good") & ~pl.col("skip"))
    scan = Scan(good=good.height, bad=bad.height)
    codec = CODEC_NAMES[precision]
    tenant = principal.tenant
    per = settings.lines_per_envelope
    if (settings.mixed_envelopes and bound is None
            and good.height * 4 < good["device"].n_unique() * per):
        chunk = (pl.int_range(pl.len()) // per).alias("chunk")
        grouped = good.with_columns(chunk, pl.lit(MANY_DEVICES).alias("device"))
    else:
        chunk = (pl.int_range(pl.len()).over("device") // per).alias("chunk")
        grouped = good.with_columns(chunk)
    chunks = grouped.group_by(["device", "chunk"], maintain_order=True).agg(
        pl.col("raw").str.join("\n"), pl.col("has_ts").all())
    for device, _, lines, timestamped in chunks.iter_rows():
        payload = lines.encode()
        if timestamped:
            digest = hashlib.blake2b(codec.encode() + b"\n" + payload,
                                     digest_size=16).hexdigest()
            msg_id = f"{tenant}/{device}/lp/{digest}"
        else:
            msg_id = f"{tenant}/{device}/uuid/{uuid.uuid4().hex}"
        scan.envelopes.append(Envelope(msg_id, tenant, device, source, codec, payload,
                                       received_at_us))
    for row, device, valid in bad.select("row", "device", "valid_id").iter_rows():
        owner = bound or (device if valid else "")
        digest = hashlib.blake2b(codec.encode() + b"\n" + raw[row], digest_size=16).hexdigest()
        scan.envelopes.append(Envelope(
            f"{tenant}/{owner or '?'}/lp-bad/{digest}", tenant, owner,
            f"{source} line {row + 1}", codec, raw[row], received_at_us))
    return scan


def _utf8(line: bytes) -> str | None:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return None


def influx_error(status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> Reply:
    """An error in InfluxDB's JSON shape ({"code", "message"}), which its clients print."""
    return Reply(status, {"code": code, "message": message}, headers or {})


async def accept_write(runtime: object, authorization: str | None,
                       chunks: AsyncIterator[bytes], content_length: str | None,
                       content_encoding: str | None, precision: str | None,
                       bucket: str | None) -> Reply:
    """Handle one write request end to end."""
    from sensorlake.runtime import Runtime
    assert isinstance(runtime, Runtime)
    precision = precision or "ns"
    try:
        principal = runtime.tokens.verify(bearer_or_basic(authorization))
        authorize(principal, Action.WRITE, principal.tenant)
        if precision not in CODEC_NAMES:
            raise InputError(f"precision '{precision}' is not supported: use ns, us, ms or s")
        body = await read_body(chunks, runtime.settings.http.max_body_bytes, content_length,
                               content_encoding)
        source = f"http:/api/v2/write bucket={bucket or ''}"
        scan = scan_body(body, principal, runtime.settings.line_protocol, precision,
                         time.time_ns() // 1000, source)
    except AuthError as exc:
        return influx_error(exc.status, "unauthorized" if exc.status == 401 else "forbidden",
                            str(exc))
    except BodyTooLarge as exc:
        return influx_error(413, "request too large", str(exc))
    except InputError as exc:
        return influx_error(400, "invalid", str(exc))
    stored = await append(runtime, scan.envelopes)
    if isinstance(stored, Reply):
        return influx_error(stored.status, "unavailable", stored.content["detail"],
                            stored.headers)
    counts = {ACCEPTED_HEADER: str(scan.good), REJECTED_HEADER: str(scan.bad)}
    if scan.bad and not scan.good:
        return influx_error(400, "invalid", f"no valid line in the batch: {scan.bad} bad "
                            "line(s), kept in the quarantine (sensorlake quarantine list)",
                            counts)
    return Reply(204, None, counts)
