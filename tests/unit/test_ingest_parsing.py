"""Request bodies -> envelopes: what ingest reads (device, seq) and what it refuses."""

from __future__ import annotations

import gzip

import orjson
import pytest

from sensorlake.auth.tokens import Principal, Role
from sensorlake.errors import AuthError
from sensorlake.ingest.body import BodyTooLarge, inflate
from sensorlake.ingest.envelopes import parse_body

OWNER = Principal("tok", Role.OWNER, "t1")
BOUND = Principal("tok", Role.INGEST, "t1", "aq-1")


def test_single_envelope_keeps_raw_bytes_and_seq():
    body = b'{"device": "aq-1", "seq": 7, "readings": {"pm2_5": 1}}'
    parsed = parse_body(body, OWNER, 123)
    (envelope,) = parsed.envelopes
    assert envelope.payload == body and envelope.seq == 7 and envelope.tenant == "t1"
    assert envelope.msg_id == "t1/aq-1/seq/7" and envelope.received_at_us == 123
    assert not parsed.errors


def test_pretty_printed_json_is_one_envelope_not_ndjson():
    body = orjson.dumps({"device": "a", "ts": 1, "readings": {"co2": 1}},
                        option=orjson.OPT_INDENT_2)
    assert len(parse_body(body, OWNER, 0).envelopes) == 1


def test_ndjson_good_lines_pass_bad_lines_are_kept_for_quarantine():
    body = (b'{"device": "a", "ts": 1, "readings": {"co2": 1}}\n'
            b'{"device": oops}\n\n'
            b'{"readings": {"co2": 2}}\n'
            b'{"device": "b", "ts": 2, "readings": {"co2": 3}}\n')
    parsed = parse_body(body, OWNER, 0)
    assert [e.device_id for e in parsed.envelopes] == ["a", "", "", "b"]
    assert [e["line"] for e in parsed.errors] == [2, 4]
    assert "invalid JSON at byte" in parsed.errors[0]["error"]
    assert 'needs "device"' in parsed.errors[1]["error"]


def test_same_timestamped_bytes_get_the_same_id_but_untimed_ones_do_not():
    timed = b'{"device": "a", "ts": 1, "readings": {"co2": 1}}'
    untimed = b'{"device": "a", "readings": {"co2": 1}}'
    assert parse_body(timed, OWNER, 0).envelopes[0].msg_id == \
        parse_body(timed, OWNER, 5).envelopes[0].msg_id
    assert parse_body(untimed, OWNER, 0).envelopes[0].msg_id != \
        parse_body(untimed, OWNER, 0).envelopes[0].msg_id


def test_device_bound_token_cannot_send_as_another_device():
    with pytest.raises(AuthError) as info:
        parse_body(b'{"device": "aq-2", "readings": {"co2": 1}}', BOUND, 0)
    assert info.value.status == 403
    # a bound token may omit the device
    assert parse_body(b'{"readings": {"co2": 1}}', BOUND, 0).envelopes[0].device_id == "aq-1"


def test_gzip_bomb_is_refused_without_inflating_it():
    bomb = gzip.compress(b"0" * 50_000_000)
    assert len(bomb) < 100_000
    with pytest.raises(BodyTooLarge):
        inflate(bomb, 1_000_000)
    assert inflate(gzip.compress(b"hello"), 10) == b"hello"
