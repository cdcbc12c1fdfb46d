"""What a channel's config must hold, per kind: the one home of these rules.

The API's models check shapes; the rules here (a webhook URL's scheme, an address, a topic)
hold for every caller, and each refusal names the field as the API shows it
(``("body", "config", "url")``) with the bad value.
"""

from __future__ import annotations

import re
from typing import Any, Final
from urllib.parse import urlsplit

from fieldhub.hub.errors import Invalid
from fieldhub.hub.notify.records import ChannelKind
from fieldhub.protocol.errors import TopicError
from fieldhub.protocol.topics import notify_topic

__all__ = ["MAX_RECIPIENTS", "check_config", "check_recipients"]

MAX_URL: Final = 2048
MAX_SECRET: Final = 256
MAX_RECIPIENTS: Final = 50
# Deliberately plain: one @, no spaces or angle brackets (which would let a value add
# recipients or headers); the mail server is the judge of the rest.
_ADDRESS = re.compile(r"^[^@\s<>,;\"]{1,64}@[A-Za-z0-9.-]{1,253}$")
_KEYS: Final[dict[str, frozenset[str]]] = {
    "webhook": frozenset({"url", "secret"}),
    "email": frozenset({"to"}),
    "mqtt": frozenset({"topic"}),
}


def _loc(*field: str | int) -> tuple[str | int, ...]:
    return ("body", "config", *field)


def check_config(
    kind: ChannelKind, config: dict[str, Any], *, old: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``config`` checked for ``kind``, normalised; on a change a secret not given is kept
    from ``old`` (secrets are write-only: the client never has them to send back).

    Raises:
        Invalid: naming the field and the bad value.
    """
    unknown = sorted(set(config) - _KEYS[kind])
    if unknown:
        raise Invalid(
            f"{kind} channels have no setting {unknown[0]!r} (known: {sorted(_KEYS[kind])})",
            _loc(unknown[0]),
        )
    if kind == "webhook":
        return _webhook(config, old or {})
    if kind == "email":
        # Optional: without it the channel is only the hub's mail transport, and each
        # subscription names its owner's own addresses.
        return {"to": check_recipients(config.get("to"), _loc("to"), least=0)}
    return {"topic": _topic(config.get("topic"))}


def _webhook(config: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    url = config.get("url")
    if not isinstance(url, str) or len(url) > MAX_URL:
        raise Invalid(f"url must be a string of at most {MAX_URL} characters", _loc("url"))
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid(f"url {url[:200]!r} must be an http:// or https:// URL", _loc("url"))
    if parts.username is not None or parts.password is not None:
        # The URL is shown to admins in every answer: credentials in it would be too.
        raise Invalid(
            "url must not hold credentials (user:password@): sign with the channel's secret",
            _loc("url"),
        )
    secret = config.get("secret", old.get("secret", ""))
    if not isinstance(secret, str) or len(secret) > MAX_SECRET:
        raise Invalid(f"secret must be a string of at most {MAX_SECRET} characters", _loc("secret"))
    return {"url": url, "secret": secret}


def check_recipients(to: Any, loc: tuple[str | int, ...], *, least: int) -> list[str]:
    """``to`` (an address or a list of ``least`` to :data:`MAX_RECIPIENTS`) checked, without
    repeats: the one rule for an address, for channels and subscriptions alike.

    Raises:
        Invalid: naming ``loc`` (and the entry's index) and the bad value.
    """
    if to is None:
        to = []
    if isinstance(to, str):
        to = [to]
    if not isinstance(to, list) or not least <= len(to) <= MAX_RECIPIENTS:
        raise Invalid(f"to must list {least} to {MAX_RECIPIENTS} e-mail addresses", loc)
    for n, address in enumerate(to):
        if not isinstance(address, str) or not _ADDRESS.match(address):
            raise Invalid(f"to[{n}] {str(address)[:200]!r} is not an e-mail address", (*loc, n))
    return list(dict.fromkeys(to))


def _topic(topic: Any) -> str:
    if not isinstance(topic, str):
        raise Invalid("topic must be a string like 'ops/alarms'", _loc("topic"))
    try:
        notify_topic(topic)
    except TopicError as exc:
        raise Invalid(str(exc), _loc("topic")) from None
    return topic
