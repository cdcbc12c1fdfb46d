"""The wire contract shared by hub, agent and gateway: topics, schemas, codec.

Nothing outside this package spells a topic or parses a payload. See ``docs/protocol.md``.
"""

from fieldhub.protocol.errors import PayloadError, ProtocolError, TopicError
from fieldhub.protocol.media import MediaAnswer, MediaRef, Upload
from fieldhub.protocol.messages import (
    MAX_PAYLOAD_BYTES,
    Ack,
    Command,
    Desired,
    Event,
    Reject,
    Reply,
    Sample,
    Sequenced,
    State,
    Status,
    Telemetry,
    decode,
    decoder_for,
    encode,
)
from fieldhub.protocol.nesting import MAX_NESTING, check_nesting, clip_nesting, exceeds_nesting
from fieldhub.protocol.topics import (
    DEVICE_TO_HUB,
    HUB_TO_DEVICE,
    PREFIX,
    SEQUENCED,
    Channel,
    Topic,
    check_device_id,
    device_subtree,
    hub_subscriptions,
    is_valid_device_id,
    parse_topic,
    topic_for,
)

__all__ = [
    "DEVICE_TO_HUB",
    "HUB_TO_DEVICE",
    "MAX_NESTING",
    "MAX_PAYLOAD_BYTES",
    "PREFIX",
    "SEQUENCED",
    "Ack",
    "Channel",
    "Command",
    "Desired",
    "Event",
    "MediaAnswer",
    "MediaRef",
    "PayloadError",
    "ProtocolError",
    "Reject",
    "Reply",
    "Sample",
    "Sequenced",
    "State",
    "Status",
    "Telemetry",
    "Topic",
    "TopicError",
    "Upload",
    "check_device_id",
    "check_nesting",
    "clip_nesting",
    "decode",
    "decoder_for",
    "device_subtree",
    "encode",
    "exceeds_nesting",
    "hub_subscriptions",
    "is_valid_device_id",
    "parse_topic",
    "topic_for",
]
