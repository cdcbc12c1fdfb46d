"""E-mail: the notification as a plain-text message through the hub's SMTP server.

The server is the hub's (``FIELDHUB_SMTP_*``); a channel only names its recipients. Every
SMTP failure (refused connection, 4xx or 5xx reply, a timeout) is retried: mail servers
refuse for passing reasons (grey-listing, a full queue) more often than for lasting ones, and
the attempt limit bounds the rest. The password is never logged nor part of an error text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import aiosmtplib

from fieldhub.hub.notify.channels.base import Outcome
from fieldhub.hub.notify.records import ChannelRecord, NotificationRecord

__all__ = ["EmailSender", "SmtpServer", "render_text"]


@dataclass(frozen=True, slots=True)
class SmtpServer:
    """Where and how the hub sends mail (from ``HubSettings``)."""

    host: str
    port: int
    starttls: bool
    sender: str
    user: str | None = None
    password: str | None = None

    def __repr__(self) -> str:  # never the password
        return f"SmtpServer({self.host}:{self.port}, starttls={self.starttls}, user={self.user!r})"


def render_text(notification: NotificationRecord) -> str:
    """The message's text: the subject, then each field of the body on its own line."""
    lines = [notification.subject, ""]
    for key, value in notification.body.items():
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        lines.append(f"{key}: {shown}")
    lines += ["", f"Event: {notification.event}", f"Notification: {notification.id}"]
    return "\n".join(lines) + "\n"


class EmailSender:
    """Sends one message per notification to its subscription's addresses, else the
    channel's ``to``."""

    def __init__(self, server: SmtpServer | None, timeout_s: float) -> None:
        self._server = server
        self._timeout_s = timeout_s

    async def send(self, notification: NotificationRecord, channel: ChannelRecord) -> Outcome:
        """See :class:`~fieldhub.hub.notify.channels.base.Sender`."""
        server = self._server
        if server is None:
            return Outcome(False, error="no SMTP server: set FIELDHUB_SMTP_HOST", permanent=True)
        message = EmailMessage()
        message["From"] = server.sender
        recipients = notification.recipients or channel.config.get("to", [])
        if not recipients:
            return Outcome(False, error="no recipients: the channel has no 'to'", permanent=True)
        message["To"] = ", ".join(recipients)
        message["Subject"] = notification.subject
        message["Date"] = formatdate(localtime=False)
        # The sender's domain, not make_msgid's default (a DNS lookup of this host, blocking).
        domain = server.sender.rpartition("@")[2] or "localhost"
        message["Message-ID"] = make_msgid(idstring=notification.id, domain=domain)
        message["X-Fieldhub-Delivery"] = notification.id
        message.set_content(render_text(notification))
        try:
            refused, _reply = await aiosmtplib.send(
                message,
                hostname=server.host,
                port=server.port,
                start_tls=server.starttls,
                username=server.user,
                password=server.password,
                timeout=self._timeout_s,
            )
        except aiosmtplib.SMTPResponseException as exc:
            return Outcome(False, status=str(exc.code), error=f"SMTP {exc.code} {exc.message}")
        except (aiosmtplib.SMTPException, OSError) as exc:
            return Outcome(False, error=f"{type(exc).__name__}: {exc}")
        # send() returns only when the server answered DATA with 250 (its text is not the code),
        # having taken at least one recipient; those it refused are in the log.
        note = "; ".join(f"{to}: {answer.code} {answer.message}" for to, answer in refused.items())
        return Outcome(True, status="250", error=f"refused recipients: {note}" if note else "")

    async def close(self) -> None:
        """Nothing kept open: one connection per message."""
