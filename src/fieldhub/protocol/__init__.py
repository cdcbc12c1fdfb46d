"""The wire contract shared by hub, agent and gateway: topics, schemas, codec.

Nothing outside this package spells a topic or parses a payload. See ``docs/protocol.md``.
"""

from fieldhub.protocol.errors import PayloadError, ProtocolError, TopicError
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
    encode,
)
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
    "MAX_PAYLOAD_BYTES",
    "PREFIX",
    "SEQUENCED",
    "Ack",
    "Channel",
    "Command",
    "Desired",
    "Event",
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
    "check_device_id",
    "decode",
    "device_subtree",
    "encode",
    "hub_subscriptions",
    "is_valid_device_id",
    "parse_topic",
    "topic_for",
]
