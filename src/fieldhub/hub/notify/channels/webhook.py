"""Webhooks: the notification as JSON POSTed to a URL, signed with the channel's secret.

Headers (``docs/notifications.md`` shows how to verify them):

- ``X-Fieldhub-Event``: what happened (``alarm.raised``, ``test``);
- ``X-Fieldhub-Delivery``: the notification id, the same on every retry: a receiver that
  keeps the ids it has seen handles each notification once even when the hub sends it twice
  (the at-least-once window: a crash between the receiver's 2xx and the hub's record);
- ``X-Fieldhub-Timestamp``: epoch seconds of this attempt (reject old ones: replay);
- ``X-Fieldhub-Signature``: ``sha256=`` + hex HMAC-SHA256(secret, timestamp + "." + body).

A 2xx is delivered; a 4xx other than 408 and 429 is dead at once (the request is wrong: a
retry sends the same); anything else (5xx, 408, 429, no connection, a timeout) is retried.
Redirects are not followed: a hook that moved is a configuration to change, not to guess.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Final

import httpx

from fieldhub import __version__
from fieldhub.hub.notify.channels.base import Outcome, envelope
from fieldhub.hub.notify.records import ChannelRecord, NotificationRecord

__all__ = ["WebhookSender", "sign"]

RETRIED_4XX: Final = frozenset({408, 429})


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Fieldhub-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class WebhookSender:
    """POSTs notifications; one HTTP client (connection pool) for every webhook channel.

    Args:
        timeout_s: a connect, read or write that takes longer fails the attempt (the worker
            also bounds the whole attempt).
    """

    def __init__(self, timeout_s: float) -> None:
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,
            headers={"User-Agent": f"fieldhub/{__version__}"},
        )

    async def send(self, notification: NotificationRecord, channel: ChannelRecord) -> Outcome:
        """See :class:`~fieldhub.hub.notify.channels.base.Sender`."""
        body = json.dumps(envelope(notification), separators=(",", ":")).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Fieldhub-Event": notification.event,
            "X-Fieldhub-Delivery": notification.id,
            "X-Fieldhub-Timestamp": timestamp,
        }
        secret = channel.config.get("secret")
        if secret:
            headers["X-Fieldhub-Signature"] = sign(str(secret), timestamp, body)
        try:
            # Streamed and closed unread: only the status matters, and a receiver that
            # answers with a large or endless body costs nothing.
            async with self._client.stream(
                "POST", str(channel.config["url"]), content=body, headers=headers
            ) as answer:
                code, reason = answer.status_code, answer.reason_phrase
        except httpx.HTTPError as exc:
            return Outcome(
                False, error=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            )
        if 200 <= code < 300:
            return Outcome(True, status=str(code))
        error = f"HTTP {code} {reason}".strip()
        permanent = 400 <= code < 500 and code not in RETRIED_4XX
        return Outcome(False, status=str(code), error=error, permanent=permanent)

    async def close(self) -> None:
        """See :class:`~fieldhub.hub.notify.channels.base.Sender`."""
        await self._client.aclose()
