"""The demo's mail server: a local SMTP server that prints each message it takes.

So that a newcomer sees an alarm arrive by e-mail without a mail server of their own, the
demo runs aiosmtpd on ``127.0.0.1`` (a free port, on the hub's event loop), points the hub's
SMTP settings at it (no STARTTLS: the connection never leaves the machine) and makes the
e-mail channel ``demo mail`` to :data:`DEMO_ADDRESS`. Each message prints one line::

    mail to ops@demo.invalid: [MAJOR] Cabinet too hot on demo-002: raised

aiosmtpd comes with the ``demo`` extra (``pip install 'fieldhub[demo]'``, which
``scripts/setup`` installs): a hub in production sends mail and never receives it, so the
server is not one of the hub's dependencies. Without it the demo says so and goes on with the
webhook alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from email import message_from_bytes, policy
from enum import StrEnum
from typing import Any, Final

from fieldhub.logescape import escape

__all__ = [
    "CHANNEL_NAME",
    "DEMO_ADDRESS",
    "DemoMail",
    "DemoMailbox",
    "demo_mail",
    "demo_mailbox",
    "point_mail_channel",
]

CHANNEL_NAME: Final = "demo mail"
DEMO_ADDRESS: Final = "ops@demo.invalid"
"""``.invalid`` is reserved (RFC 2606): no real mailbox can ever get the demo's mail."""
MAX_MESSAGE: Final = 1024 * 1024
"""A notification is a few hundred bytes; the server refuses anything past this."""


class DemoMail(StrEnum):
    """Where the demo's e-mail goes."""

    RUNNING = "running"
    """To the demo's own server, which prints it."""
    MISSING = "missing"
    """Nowhere: aiosmtpd is not installed."""
    YOURS = "yours"
    """To the SMTP server the user set (``FIELDHUB_SMTP_HOST``); the demo adds no channel."""


class DemoMailbox:
    """aiosmtpd's handler: prints ``mail to <recipients>: <subject>`` for each message.

    Args:
        say: called with each line, on the event loop.
    """

    def __init__(self, say: Callable[[str], None]) -> None:
        self.port = 0
        self.received = 0
        self._say = say

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """aiosmtpd calls this with each accepted message (the name is its interface)."""
        message = message_from_bytes(envelope.original_content or b"", policy=policy.default)
        recipients = ", ".join(envelope.rcpt_tos)
        subject = str(message.get("Subject", ""))
        self.received += 1
        # One line, whatever the mail says: a subject comes from device ids and rule names.
        self._say(f"mail to {escape(recipients)[:200]}: {escape(subject)[:300]}")
        return "250 OK"


@asynccontextmanager
async def demo_mailbox(say: Callable[[str], None]) -> AsyncIterator[DemoMailbox | None]:
    """A running SMTP server on 127.0.0.1 (its port in ``.port``), or None without aiosmtpd."""
    try:
        from aiosmtpd.smtp import SMTP
    except ImportError:
        yield None
        return
    # aiosmtpd logs every SMTP command at INFO ("mail.log"); the demo's console shows one
    # line per message instead (DemoMailbox), and its warnings still.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    mailbox = DemoMailbox(say)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(mailbox, hostname="localhost", data_size_limit=MAX_MESSAGE),
        "127.0.0.1",
        0,
    )
    mailbox.port = server.sockets[0].getsockname()[1]
    try:
        yield mailbox
    finally:
        server.close()
        await server.wait_closed()


@asynccontextmanager
async def demo_mail(
    settings: Any, say: Callable[[str], None]
) -> AsyncIterator[tuple[Any, DemoMail]]:
    """The demo's mail server while the demo runs, and the hub settings that send to it.

    Args:
        settings: the demo hub's ``HubSettings``; kept as they are when they name an SMTP
            server of the user's own.
        say: prints a line on the demo's console.

    Yields:
        The settings to start the hub with, and where its e-mail goes.
    """
    if settings.smtp_host:
        yield settings, DemoMail.YOURS
        return
    async with demo_mailbox(say) as mailbox:
        if mailbox is None:
            yield settings, DemoMail.MISSING
            return
        local = {"smtp_host": "127.0.0.1", "smtp_port": mailbox.port, "smtp_starttls": False}
        yield settings.model_copy(update=local), DemoMail.RUNNING


async def point_mail_channel(hub: Any) -> bool:
    """Make the e-mail channel ``demo mail`` to :data:`DEMO_ADDRESS`, with a hub-wide
    subscription (every alarm raised and cleared), on a new data folder; at a restart leave
    both as the user left them (enabled or not, its recipients).

    Args:
        hub: the running hub (``fieldhub.hub.app.Hub``), its SMTP server the demo's.

    Returns:
        False when a channel of another kind has that name (the user's own: left alone).
    """
    for channel in await hub.notifications.channels():
        if channel.name == CHANNEL_NAME:
            return bool(channel.kind == "email")
    config = {"to": [DEMO_ADDRESS]}
    channel = await hub.notifications.create_channel(CHANNEL_NAME, "email", config, actor="demo")
    await hub.notifications.subscriptions.subscribe_hub_wide(channel.id, actor="demo")
    return True
