"""MQTT ingest's short path for the common envelope gives exactly what `parse_body` (the
HTTP path) gives, and leaves everything else to it."""

from __future__ import annotations

import pytest

from sensorlake.auth.tokens import Principal, Role
from sensorlake.config import load_settings
from sensorlake.ingest import mqtt
from sensorlake.ingest.envelopes import parse_body
from sensorlake.ingest.mqtt_topics import TopicRouter
from sensorlake.log.base import Envelope

TOPIC = "sensorlake/aq-1/up"
BODIES = [
    b'{"device": "aq-1", "seq": 7, "readings": {"pm2_5": 1.5}}',
    b'  {"seq": 8, "ts": 1795000000000, "readings": {"pm10": 3}}\n',
    b'{"device": "aq-1", "seq": true, "readings": {"pm2_5": 1}}',
    b'{"device": "aq-1", "seq": 0, "readings": {"pm2_5": 1}}',
    b'{"device": "aq-1", "seq": "9", "readings": {"pm2_5": 1}}',
    b'{"device": "aq-1", "ts": 1795000000000, "readings": {"pm2_5": 1}}',
    b'{"device": "aq-1", "seq": 1}\n{"device": "aq-1", "seq": 2}',
    b'[1, 2]',
    b'{"device": 5, "seq": 3}',
    b'not json',
]


def _no_uuid(envelope: Envelope) -> Envelope:
    """A random message id (no seq, no ts) differs from call to call: compare its kind."""
    return envelope._replace(msg_id=envelope.msg_id.split("/uuid/")[0])


@pytest.mark.parametrize("body", BODIES)
def test_the_short_path_matches_parse_body(body: bytes, tmp_path) -> None:
    route = TopicRouter(load_settings(data_dir=tmp_path).mqtt, "default").route(TOPIC)
    assert route is not None
    got, refused = mqtt.envelopes_of(route, TOPIC, body, 42)
    parsed = parse_body(body, Principal("t", Role.INGEST, "default", "aq-1"), 42,
                        f"mqtt:{TOPIC}")
    assert refused == bool(parsed.errors)
    assert [_no_uuid(e) for e in got] == [_no_uuid(e) for e in parsed.envelopes]


def test_the_short_path_takes_the_common_message_only(tmp_path) -> None:
    route = TopicRouter(load_settings(data_dir=tmp_path).mqtt, "default").route(TOPIC)
    assert route is not None
    source = f"mqtt:{TOPIC}"
    common = mqtt._simple_envelope(route, source, BODIES[0], 1)
    assert common is not None and common.msg_id == "default/aq-1/seq/7" and common.seq == 7
    for other in (BODIES[2], BODIES[3], BODIES[4], BODIES[5], BODIES[6], BODIES[7]):
        assert mqtt._simple_envelope(route, source, other, 1) is None
    claims_other = b'{"device": "aq-2", "seq": 1}'
    assert mqtt._simple_envelope(route, source, claims_other, 1) is None
