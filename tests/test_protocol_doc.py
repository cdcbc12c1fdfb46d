"""Every example in docs/protocol.md decodes as the page says it does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fieldhub.protocol import PayloadError, decode, encode, parse_topic

DOC = Path(__file__).parent.parent / "docs" / "protocol.md"
_BLOCK = re.compile(r"```json topic=(\S+)( invalid)?\n(.*?)```", re.DOTALL)
EXAMPLES = [(m.group(1), bool(m.group(2)), m.group(3)) for m in _BLOCK.finditer(DOC.read_text())]


def test_the_page_has_examples_of_every_channel():
    channels = {parse_topic(topic).channel.value for topic, _, _ in EXAMPLES}
    assert channels == {
        "telemetry",
        "event",
        "state",
        "status",
        "reply",
        "ack",
        "reject",
        "cmd",
        "desired",
        "upload",
        "media",
    }


@pytest.mark.parametrize(("topic", "invalid", "body"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_example(topic: str, invalid: bool, body: str):
    channel = parse_topic(topic).channel
    if invalid:
        with pytest.raises(PayloadError):
            decode(channel, body.encode())
    else:
        message = decode(channel, body.encode())
        assert decode(channel, encode(message)) == message  # and it survives a round trip
