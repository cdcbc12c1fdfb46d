"""The topic tree: the only place where a topic is spelled.

Every topic is ``fh/v1/{device_id}/{channel}[/{suffix}]``. The device id sits at a fixed
position so that one broker ACL pattern (``fh/v1/%u/#``) confines a device to its own subtree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from fieldhub.protocol.errors import TopicError

PREFIX = "fh/v1"
_PREFIX_SLASH = PREFIX + "/"

# Letters, digits, '.', '_' and '-', starting with a letter or digit: never an MQTT wildcard,
# a level separator, '$' or NUL, so an id can be put into a topic or an ACL pattern verbatim.
DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_DEVICE_ID = re.compile(DEVICE_ID_PATTERN)
# Hub instance names follow the same rule; they address command replies to one hub process.
INSTANCE_PATTERN = DEVICE_ID_PATTERN


class Channel(StrEnum):
    """What a message on a device's subtree is. The first group flows device → hub."""

    TELEMETRY = "telemetry"  # sequenced: samples of named values
    EVENT = "event"  # sequenced: something happened (door opened, fault)
    STATE = "state"  # sequenced: reported state, merged key by key
    STATUS = "status"  # retained presence, also the device's last will
    REPLY = "reply"  # command result; suffix = the hub instance that sent the command
    UPLOAD = "upload"  # asks for a media upload URL, or carries a chunk (protocol/media.py)
    # hub → device
    ACK = "ack"  # storage acknowledgement: highest contiguous seq committed
    REJECT = "reject"  # a message the hub refused, and why
    CMD = "cmd"  # command to run (commands issue)
    DESIRED = "desired"  # retained desired state with a version (twin)
    MEDIA = "media"  # answers on upload: URL, done, refusal or bytes received


DEVICE_TO_HUB = frozenset(
    {Channel.TELEMETRY, Channel.EVENT, Channel.STATE, Channel.STATUS, Channel.REPLY, Channel.UPLOAD}
)
HUB_TO_DEVICE = frozenset(
    {Channel.ACK, Channel.REJECT, Channel.CMD, Channel.DESIRED, Channel.MEDIA}
)
SEQUENCED = frozenset({Channel.TELEMETRY, Channel.EVENT, Channel.STATE})
_CHANNELS = {c.value: c for c in Channel}


def is_valid_device_id(device_id: str) -> bool:
    """True when ``device_id`` may be used as a device id (and so as a topic level)."""
    return _DEVICE_ID.match(device_id) is not None


def check_device_id(device_id: str) -> str:
    """Return ``device_id`` unchanged, or raise :class:`TopicError` saying what is wrong."""
    if not is_valid_device_id(device_id):
        raise TopicError(
            f"device id {device_id!r} is not valid: use 1-64 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    return device_id


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed topic of the tree."""

    device_id: str
    channel: Channel
    suffix: str = ""

    def __str__(self) -> str:
        return topic_for(self.device_id, self.channel, self.suffix)


def topic_for(device_id: str, channel: Channel, suffix: str = "") -> str:
    """Spell the topic of ``channel`` for ``device_id`` (``suffix`` only for ``reply``)."""
    base = f"{_PREFIX_SLASH}{device_id}/{channel.value}"
    return f"{base}/{suffix}" if suffix else base


NOTIFY_PREFIX = "fh/notify"
"""The hub's notification tree (MQTT notification channels): outside the device tree, so the
hub never reads its own notifications back as a device's messages and no device may read them."""
NOTIFY_TOPIC_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}(/[A-Za-z0-9][A-Za-z0-9._-]{0,63}){0,7}$"
"""A channel's topic below the tree: up to 8 levels of letters, digits, '.', '_', '-'."""
_NOTIFY_TOPIC = re.compile(NOTIFY_TOPIC_PATTERN)


def notify_topic(suffix: str) -> str:
    """Spell the notification topic ``fh/notify/<suffix>``.

    Raises:
        TopicError: ``suffix`` is not levels of letters, digits, '.', '_' and '-' (no
            wildcards, no empty level, at most 8 levels).
    """
    if not _NOTIFY_TOPIC.match(suffix):
        raise TopicError(
            f"notification topic {suffix!r} must be 1 to 8 levels of letters, digits, '.', '_', '-'"
        )
    return f"{NOTIFY_PREFIX}/{suffix}"


def parse_topic(topic: str) -> Topic:
    """Split a topic of the tree into device id, channel and suffix.

    Raises:
        TopicError: the topic is outside the tree, names an unknown channel, or carries an
            invalid device id.
    """
    if not topic.startswith(_PREFIX_SLASH):
        raise TopicError(f"topic {topic!r} is outside the {PREFIX}/ tree")
    parts = topic[len(_PREFIX_SLASH) :].split("/")
    if len(parts) < 2:
        raise TopicError(f"topic {topic!r} has no channel")
    device_id, channel_name, *rest = parts
    check_device_id(device_id)
    channel = _CHANNELS.get(channel_name)
    if channel is None:
        raise TopicError(f"topic {topic!r} names unknown channel {channel_name!r}")
    if channel is Channel.REPLY:
        if len(rest) != 1 or not _DEVICE_ID.match(rest[0]):
            raise TopicError(f"reply topic {topic!r} must end in one hub instance name")
        return Topic(device_id, channel, rest[0])
    if rest:
        raise TopicError(f"topic {topic!r} has extra levels after {channel_name!r}")
    return Topic(device_id, channel)


def device_subtree(device_id: str) -> str:
    """The filter covering everything of one device: what its broker ACL allows."""
    return f"{_PREFIX_SLASH}{device_id}/#"


def hub_subscriptions(instance: str, share_group: str | None = None) -> list[str]:
    """The filters a hub process subscribes to: all device→hub channels, its own replies.

    With ``share_group`` (several hubs ingest one fleet: docs/scaling.md) the sequenced
    channels go through the broker's shared subscription ``$share/<group>/…``: each message
    reaches one hub of the group, and the database stores it once whichever hub it reaches.
    Status stays a plain subscription, because brokers do not send retained messages to shared
    ones and every hub must know every device's presence when it starts; so do uploads, whose
    chunks must all reach the hub holding the object's partial copy.
    """
    shared = "" if share_group is None else f"$share/{share_group}/"
    subs = [
        f"{shared}{_PREFIX_SLASH}+/{c.value}"
        for c in (Channel.TELEMETRY, Channel.EVENT, Channel.STATE)
    ]
    subs += [f"{_PREFIX_SLASH}+/{c.value}" for c in (Channel.STATUS, Channel.UPLOAD)]
    subs.append(f"{_PREFIX_SLASH}+/{Channel.REPLY.value}/{instance}")
    return subs
