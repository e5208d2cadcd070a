"""InfluxDB line protocol: the parser against the grammar's corner cases, the codec, and the
ingest scan. Hypothesis checks that the three implementations agree on generated lines:
the ingest regex accepts exactly what the precise parser accepts, and the vectorized codec
path produces exactly what the precise path produces."""

from __future__ import annotations

import math
import os
import re

import polars as pl
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sources_support import NOW_US, CodecSetup, entries, rows

from sensorlake.auth.tokens import Principal, Role
from sensorlake.config import LineProtocolSettings, load_settings
from sensorlake.decode import get_codec
from sensorlake.decode.context import configure_codecs
from sensorlake.decode.lineprotocol import MANY_DEVICES
from sensorlake.decode.lp_grammar import (
    POINT_RE,
    LineSyntaxError,
    LineValueError,
    field_value,
    parse_line,
    timestamp_ns,
)
from sensorlake.errors import AuthError
from sensorlake.ingest.lineprotocol import check_lines, scan_body

FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


# -- the precise parser -----------------------------------------------------------------------

@pytest.mark.parametrize("line,measurement,tags,fields,ts", [
    ("cpu,host=a usage=1.5 1700000000000000000", "cpu", [("host", "a")],
     [("usage", "f", "1.5")], "1700000000000000000"),
    ("m f=1i,g=2u,h=-3i,b=TRUE,c=f,s=\"x\"", "m", [],
     [("f", "i", "1"), ("g", "u", "2"), ("h", "i", "-3"), ("b", "b", "TRUE"),
      ("c", "b", "f"), ("s", "s", "x")], None),
    ("  m   f=.5e3    -12   ", "m", [], [("f", "f", ".5e3")], "-12"),
    (r"my\ meas\,x,tag\ key=va\=l\,ue f\=ld=1", "my meas,x", [("tag key", "va=l,ue")],
     [("f=ld", "f", "1")], None),
    (r"m\=x,t=a\\,b f=1", "m\\=x", [("t", "a\\,b")], [("f", "f", "1")], None),
    ('m s="a \\"quoted\\" \\\\ back, with = and spaces" 5', "m", [],
     [("s", "s", 'a "quoted" \\ back, with = and spaces')], "5"),
    ("m,t=ünï f=1", "m", [("t", "ünï")], [("f", "f", "1")], None),
    ('m s="tab\there"', "m", [], [("s", "s", "tab\there")], None),
    (r"\#m f=1", "\\#m", [], [("f", "f", "1")], None),
])
def test_parse_valid_lines(line: str, measurement: str, tags: list, fields: list,
                           ts: str | None) -> None:
    point = parse_line(line)
    assert point is not None
    assert (point.measurement, point.tags, point.fields, point.timestamp) == (
        measurement, tags, fields, ts)
    assert re.search(POINT_RE, line), "the ingest regex must accept it too"


@pytest.mark.parametrize("line", ["", "   ", "# a comment", "  #\tcomment with a tab"])
def test_blank_and_comment_lines_carry_no_point(line: str) -> None:
    assert parse_line(line) is None


@pytest.mark.parametrize("line,offset,message", [
    ("m", 1, "at least one field"),
    ("m,t f=1", 3, "expected '=' after tag key 't'"),
    ("m,t= f=1", 4, "expected a value for tag 't'"),
    ("m, f=1", 2, "expected a tag key"),
    ("m f=1.5.5", 4, "invalid value '1.5.5'"),
    ("m f=+1", 4, "invalid value '+1'"),
    ("m f=tru", 4, "invalid value 'tru'"),
    ("m f=1e", 4, "invalid value '1e'"),
    ("m f=NaN", 4, "invalid value 'NaN'"),
    ('m f="open', 4, "no closing quote"),
    ("m f=1 12x", 6, "invalid timestamp '12x'"),
    ("m f=1 1 2", 8, "unexpected text after the timestamp"),
    ('m f="a"b', 7, "unexpected 'b' after the fields"),
    ("m\tx f=1", 1, "control character"),
    ("m f=1\\", 4, "invalid value"),
    ("m f\\", 3, "a backslash in the field key must be followed"),
    ("#bad\x01comment", 4, "control character"),
    ("mé f=1 x", 8, "invalid timestamp"),
])
def test_syntax_errors_name_the_byte_offset(line: str, offset: int, message: str) -> None:
    with pytest.raises(LineSyntaxError) as caught:
        parse_line(line)
    assert caught.value.offset == offset and message in str(caught.value), (
        caught.value.offset, str(caught.value))
    assert not re.search(POINT_RE, line)


def test_value_ranges() -> None:
    assert field_value("i", "9223372036854775807") == 9223372036854775807.0
    assert field_value("u", "18446744073709551615") == 18446744073709551615.0
    for kind, text in (("i", "9223372036854775808"), ("u", "18446744073709551616"),
                       ("f", "1e400")):
        with pytest.raises(LineValueError):
            field_value(kind, text)
    assert timestamp_ns("1700000000", 1_000_000_000) == 1_700_000_000_000_000_000
    with pytest.raises(LineValueError):
        timestamp_ns("9300000000", 1_000_000_000)


# -- the codec --------------------------------------------------------------------------------

LINES = b"""# from telegraf
air,device=aq-1,site=roof pm2_5=12.5,pm10=20i,ok=true 1795435100000000000
air,device=aq-1 temperature=21.25,note="numeric \\"text\\"",raw="12.5" 1795435110000000000
air,device=aq-1 wifi="connected"
air,device=aq-1 big=99999999999999999999i 1795435100000000000
not a point
"""


def test_codec_values_types_mapping_and_rejects(codecs: CodecSetup) -> None:
    codecs(line_protocol={"fields": {"air.pm2_5": "pm2_5", "raw": "pm1", "ok": "",
                                     "pm10": "pm10"}})
    batch = get_codec("line_protocol").decode(entries([LINES], "line_protocol", "aq-1"))
    assert [(m, v, int(ts.timestamp() * 1e6)) for m, v, ts in rows(
        batch.readings, "metric", "value", "ts")] == [
        ("pm2_5", 12.5, 1795435100000000), ("pm10", 20.0, 1795435100000000),
        ("temperature", 21.25, 1795435110000000), ("pm1", 12.5, 1795435110000000)]
    reasons = dict(rows(batch.rejects, "field", "reason"))
    assert "field 'note' is a string, not a number" in reasons["note"]
    assert "field 'wifi' is a string" in reasons["wifi"]
    assert "line 5: integer 99999999999999999999i is out of the int64 range" in \
        reasons["line 5"]
    assert "line_protocol: aq-1: line 6, byte 5: expected '=' after field key 'a'" in \
        reasons["line 6"]


def test_precisions_and_arrival_time(codecs: CodecSetup) -> None:
    codecs()
    for codec, stamp in (("line_protocol_s", "1795435100"), ("line_protocol_ms",
                                                             "1795435100000"),
                         ("line_protocol_us", "1795435100000000")):
        batch = get_codec(codec).decode(entries([f"m f=1 {stamp}".encode()], codec))
        assert batch.readings.column("ts").cast("int64").to_pylist() == [1795435100000000]
    batch = get_codec("line_protocol").decode(entries([b"m f=1"], "line_protocol"))
    assert batch.readings.column("ts").cast("int64").to_pylist() == [NOW_US]


def test_unattributed_lines_say_why(codecs: CodecSetup) -> None:
    codecs()
    batch = get_codec("line_protocol").decode(entries(
        [b"m f=1", b"m,device=bad\\ id f=1", b"m f="], "line_protocol", ""))
    reasons = batch.rejects.column("reason").to_pylist()
    assert "no device: tag the line with device=<id> (or host=)" in reasons[0]
    assert "tag value 'bad id' is not a valid device id" in reasons[1]
    assert "byte 4" in reasons[2]


def test_an_envelope_of_many_devices_decodes_like_one_envelope_per_device(
        codecs: CodecSetup) -> None:
    codecs()
    ts = "1795435100000000000"
    body = [f"air,device=d1 pm2_5=1,pm10=2 {ts}", f'air,device=d2 pm2_5=2,s="x" {ts}',
            "air,host=h3 pm2_5=3", "air,device=d\\ 4 pm2_5=4", "air pm2_5=5",
            "air,device=d5,site=a\\ b pm2_5=8", f"air,device=d1 pm2_5=7 {int(ts) + 10**9}",
            "air,device=d2 pm2_5=99999999999999999999i"]
    codec = get_codec("line_protocol")
    many = codec.decode(entries(["\n".join(body).encode()], "line_protocol", MANY_DEVICES))
    found = sorted(rows(many.readings, "device_id", "metric", "value"))
    assert found == [("d1", "pm10", 2.0), ("d1", "pm2_5", 1.0), ("d1", "pm2_5", 7.0),
                     ("d2", "pm2_5", 2.0), ("d5", "pm2_5", 8.0), ("h3", "pm2_5", 3.0)]
    for device in ("d1", "d2", "d5", "h3"):
        mine = [line for line in body if f"={device} " in line or f"={device}," in line]
        alone = codec.decode(entries(["\n".join(mine).encode()], "line_protocol", device))
        assert alone.readings.drop_columns("msg_id").equals(many.readings.filter(
            pc.equal(many.readings.column("device_id"), device)).drop_columns("msg_id"))
    rejects = sorted(rows(many.rejects, "device_id", "reason"))
    assert [d for d, _ in rejects] == ["", "", "d2", "d2"]
    assert "line 5: no device: tag the line with device=<id>" in rejects[0][1] + rejects[1][1]
    assert "tag value 'd 4' is not a valid device id" in rejects[0][1] + rejects[1][1]
    assert "line_protocol: d2: line 2: field 's' is a string" in rejects[2][1] + rejects[3][1]
    assert "line_protocol: d2: line 8" in rejects[2][1] + rejects[3][1]


# -- the ingest scan --------------------------------------------------------------------------

PRINCIPAL = Principal("tok", Role.INGEST, "default")


def scan(body: bytes, principal: Principal = PRINCIPAL, **settings_: object):
    return scan_body(body, principal, LineProtocolSettings(**settings_), "ns", NOW_US, "test")


def test_scan_groups_lines_by_device_and_isolates_bad_lines() -> None:
    body = b"\r\n".join([b"cpu,host=a f=1 1", b"cpu,host=b f=2 2", b"", b"# c",
                         b"cpu,device=c,host=z f=3 3", b"garbage", b"cpu f=4 4",
                         b"cpu,host=a f=5 5", b"\xff\xfe f=1"]) + b"\r\n"
    result = scan(body, lines_per_envelope=2)
    assert (result.good, result.bad) == (4, 3)
    good = [(e.device_id, e.payload) for e in result.envelopes if "/lp/" in e.msg_id]
    assert good == [("a", b"cpu,host=a f=1 1\r\ncpu,host=a f=5 5\r"),
                    ("b", b"cpu,host=b f=2 2\r"), ("c", b"cpu,device=c,host=z f=3 3\r")]
    bad = [(e.device_id, e.payload, e.source) for e in result.envelopes if "lp-bad" in e.msg_id]
    assert bad == [("", b"garbage\r", "test line 6"), ("", b"cpu f=4 4\r", "test line 7"),
                   ("", b"\xff\xfe f=1\r", "test line 9")]
    again = scan(body, lines_per_envelope=2)
    assert [e.msg_id for e in again.envelopes] == [e.msg_id for e in result.envelopes], \
        "a retried batch with timestamps makes the same message ids"


def test_scan_puts_many_devices_with_few_lines_each_into_shared_envelopes() -> None:
    body = "\n".join(f"air,device=d{i},site=x pm2_5={i} {i}" for i in range(1000)).encode()
    result = scan(body)
    assert result.good == 1000 and [e.device_id for e in result.envelopes] == [MANY_DEVICES] * 5
    assert b"\n".join(e.payload for e in result.envelopes) == body, "200 lines each, in order"
    assert all(e.msg_id.startswith("default/*/lp/") for e in result.envelopes)
    assert [e.msg_id for e in scan(body).envelopes] == [e.msg_id for e in result.envelopes]
    assert len(scan(body, mixed_envelopes=False).envelopes) == 1000
    few = "\n".join(f"air,device=d{i % 3} pm2_5={i} {i}" for i in range(300)).encode()
    assert [e.device_id for e in scan(few).envelopes] == ["d0", "d1", "d2"], "100 lines each"
    bound = Principal("tok", Role.INGEST, "default", "d1")
    alone = "\n".join(f"air pm2_5={i} {i}" for i in range(10)).encode()
    assert [e.device_id for e in scan(alone, bound).envelopes] == ["d1"]


def test_scan_without_timestamps_makes_new_messages() -> None:
    first, second = scan(b"m,host=a f=1"), scan(b"m,host=a f=1")
    assert first.envelopes[0].msg_id != second.envelopes[0].msg_id


def test_device_bound_tokens() -> None:
    bound = Principal("tok", Role.INGEST, "default", "aq-1")
    result = scan(b"m f=1 1\nm,device=aq-1 f=2 2", bound)
    assert [e.device_id for e in result.envelopes] == ["aq-1"]
    with pytest.raises(AuthError) as caught:
        scan(b"m f=1 1\nm,host=other f=2 2", bound)
    assert caught.value.status == 403 and "'other'" in str(caught.value)


# -- property tests: the implementations agree ------------------------------------------------

MAPPED = load_settings(line_protocol={"fields": {"a.b": "mapped", "c": "", "b": "x"}})
_key_chars = st.sampled_from([*"abcXYZ09_-.:é", r"\ ", r"\,", r"\=", "\\\\", "\\"])
_key = st.lists(_key_chars, min_size=1, max_size=6).map("".join)
_number = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64).map(repr),
    st.integers(-2**70, 2**70).map(lambda v: f"{v}i"), st.integers(0, 2**70).map(
        lambda v: f"{v}u"), st.sampled_from(["t", "F", "true", "False", "1.", ".5", "1e5",
                                             "-0", "1e400", "+1", "1.5.5", "inf", "tru"]))
_string = st.text(st.sampled_from(list('ab ,=\\"é\t')), max_size=8).map(
    lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"')
_value = st.one_of(_number, _string, _string.map(lambda s: s[:-1]))
_field = st.tuples(_key, _value).map("=".join)
_tag = st.one_of(st.tuples(_key, _key).map("=".join), st.sampled_from(
    ["device=d1", "device=d-2", "host=h1", "device=bad\\ id", "device=a\\,b", "device="]))
_space = st.sampled_from([" ", "  "])


@st.composite
def lines(draw: st.DrawFn) -> str:
    """Mostly valid lines, with every part able to go wrong."""
    parts = [draw(st.sampled_from(["", " "])), draw(_key.filter(lambda k: not k.startswith("#")))]
    parts += ["," + t for t in draw(st.lists(_tag, max_size=3))]
    parts += [draw(_space), ",".join(draw(st.lists(_field, min_size=1, max_size=3)))]
    if draw(st.booleans()):
        parts += [draw(_space), draw(st.sampled_from(["1795435100000000000", "-5", "12x",
                                                      "99999999999999999999"]))]
    line = "".join(parts) + draw(st.sampled_from(["", " "]))
    if draw(st.integers(0, 9)) == 0:  # now and then, damage it anywhere
        at = draw(st.integers(0, len(line)))
        line = line[:at] + draw(st.sampled_from([" ", ",", "=", '"', "\\", "\x01", ""])) + \
            line[at:]
    return line


@FUZZ
@given(st.lists(lines(), min_size=1, max_size=40))
def test_ingest_checks_accept_exactly_what_the_parser_accepts(batch: list[str]) -> None:
    checked = check_lines(pl.Series(batch), "device", "host")
    for line, point in zip(batch, checked["point"].to_list(), strict=True):
        try:
            parsed = parse_line(line) is not None
        except LineSyntaxError:
            parsed = False
        assert point == parsed, repr(line)


@FUZZ
@given(st.lists(lines(), min_size=1, max_size=40), st.sampled_from(["dev-1", MANY_DEVICES]))
def test_vectorized_and_precise_paths_agree(batch: list[str], device: str) -> None:
    configure_codecs(MAPPED)
    table = entries(["\n".join(batch).encode()], "line_protocol", device)
    codec = get_codec("line_protocol")
    fast, slow = codec.decode(table), codec.decode(table, vectorize=False)
    assert fast.readings.equals(slow.readings)
    assert sorted(rows(fast.rejects, "field", "reason")) == sorted(
        rows(slow.rejects, "field", "reason"))
    assert all(math.isfinite(v) for v in fast.readings.column("value").to_pylist())
