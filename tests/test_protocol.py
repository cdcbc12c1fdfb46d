"""The wire contract: topics, device ids, schemas, and what bad input is told."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fieldhub.protocol import (
    MAX_PAYLOAD_BYTES,
    Channel,
    PayloadError,
    Sample,
    Telemetry,
    TopicError,
    check_device_id,
    decode,
    device_subtree,
    encode,
    hub_subscriptions,
    is_valid_device_id,
    parse_topic,
    topic_for,
)


@pytest.mark.parametrize("device_id", ["atm-0042", "A", "pi_3.b-plus", "x" * 64])
def test_valid_device_ids(device_id: str):
    assert check_device_id(device_id) == device_id
    assert parse_topic(topic_for(device_id, Channel.TELEMETRY)).device_id == device_id


@pytest.mark.parametrize(
    "device_id", ["", "+", "#", "a/b", "$SYS", "a\x00b", "-lead", "x" * 65, "a b", "ü"]
)
def test_device_ids_that_could_escape_a_subtree_are_refused(device_id: str):
    assert not is_valid_device_id(device_id)
    with pytest.raises(TopicError, match="not valid"):
        check_device_id(device_id)


@pytest.mark.parametrize(
    ("topic", "error"),
    [
        ("other/v1/d/telemetry", "outside"),
        ("fh/v2/d/telemetry", "outside"),
        ("fh/v1/d", "no channel"),
        ("fh/v1/d/unknown", "unknown channel"),
        ("fh/v1/d/telemetry/extra", "extra levels"),
        ("fh/v1/d/reply", "hub instance"),
        ("fh/v1/+/telemetry", "not valid"),
    ],
)
def test_malformed_topics_say_what_is_wrong(topic: str, error: str):
    with pytest.raises(TopicError, match=error):
        parse_topic(topic)


def test_subscriptions_and_acl_pattern_cover_the_tree():
    assert device_subtree("d1") == "fh/v1/d1/#"
    assert "fh/v1/+/reply/hub-a" in hub_subscriptions("hub-a")
    reply = parse_topic("fh/v1/d1/reply/hub-a")
    assert (reply.channel, reply.suffix) == (Channel.REPLY, "hub-a")
    assert str(reply) == "fh/v1/d1/reply/hub-a"


def test_unknown_fields_are_ignored_for_forward_compatibility():
    message = decode(Channel.TELEMETRY, b'{"seq":1,"ts":2,"values":{"t":1},"future":{"x":1}}')
    assert message.values == {"t": 1}


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"{", "not valid JSON"),
        (b'{"seq":0,"ts":1,"values":{"t":1}}', r"\$.seq"),
        (b'{"seq":1,"ts":-5,"values":{"t":1}}', r"\$.ts"),
        (b'{"seq":1,"ts":1,"values":{}}', "non-empty"),
        (b'{"seq":1,"ts":1,"values":{"t":1},"samples":[]}', "not both"),
        (b'{"seq":1,"ts":1,"values":{"bad key":1}}', "key 'bad key' is not valid"),
        (b'{"seq":1,"ts":1,"values":{"t":{"a":1}}}', "bool | int | float | str"),
    ],
)
def test_invalid_telemetry_errors_name_the_problem(payload: bytes, error: str):
    with pytest.raises(PayloadError, match=error):
        decode(Channel.TELEMETRY, payload)


def test_oversized_payload_is_refused_unread():
    with pytest.raises(PayloadError, match="exceeds"):
        decode(Channel.TELEMETRY, b" " * (MAX_PAYLOAD_BYTES + 1))


def test_floor_is_oldest_or_the_seq_itself():
    assert Telemetry(seq=9, ts=1, values={"t": 1}).floor() == 9
    assert Telemetry(seq=9, oldest=4, ts=1, values={"t": 1}).floor() == 4


_values = st.dictionaries(
    st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True),
    st.one_of(
        st.booleans(),
        st.integers(-(2**53), 2**53),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=20),
    ),
    min_size=1,
    max_size=8,
)


@given(
    seq=st.integers(1, 2**53),
    samples=st.lists(
        st.builds(Sample, ts=st.integers(0, 2**50), values=_values), min_size=1, max_size=5
    ),
)
def test_telemetry_round_trips(seq: int, samples: list[Sample]):
    message = Telemetry(seq=seq, samples=samples)
    decoded = decode(Channel.TELEMETRY, encode(message))
    assert decoded == message
    assert decoded.instants() == [(s.ts, s.values) for s in samples]


def test_encoded_messages_are_compact_json():
    assert msgspec.json.decode(encode(Telemetry(seq=1, ts=2, values={"t": 1.5}))) == {
        "seq": 1,
        "oldest": None,
        "ts": 2,
        "values": {"t": 1.5},
        "samples": None,
    }
