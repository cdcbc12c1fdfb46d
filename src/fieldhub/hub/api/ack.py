"""``/ack/{token}``: acknowledge an alarm from the link in its notification.

A small server-rendered page, outside the API and its spec like the dashboard's pages: the
link itself is the credential (``hub/notify/ack_links.py``), no login is needed, and the
recipient may be on a phone that never saw the dashboard.

- ``GET`` shows the alarm and a button; it never changes anything (mail scanners and chat
  previews fetch every link in a message).
- ``POST`` (the button) acknowledges as ``link:<recipient>``, with the audit entry and the
  alarm's history as any acknowledgement; escalation stops with it.
- A link used already, or expired: 410 with a page saying so. A forged or altered one: 404,
  the page any unknown address gets, with no detail. An alarm acknowledged meanwhile: a page
  saying by whom.

Tokens never reach a log: uvicorn's access log shows ``/ack/<token>`` in their place.
"""

from __future__ import annotations

import html
import logging
import re
from datetime import UTC, datetime
from typing import Final

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from fieldhub.hub.alarms import AlarmRecord
from fieldhub.hub.app import Hub
from fieldhub.hub.errors import Conflict, NotFound
from fieldhub.hub.notify.ack_links import AckLinks, LinkClaim, LinkExpired, LinkForged, LinkUsed

__all__ = ["install"]

_TOKEN_IN_PATH: Final = re.compile(r"/ack/[^/?\s\"]+")
_HEADERS: Final = {"Cache-Control": "no-store"}
COMMENT: Final = "acknowledged from the link in a notification"


class _HideAckTokens(logging.Filter):
    """Puts ``/ack/<token>`` for the token in access-log records (a token is a credential)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _TOKEN_IN_PATH.sub("/ack/<token>", a) if isinstance(a, str) else a
                for a in record.args
            )
        return True


def _page(status: int, title: str, *paragraphs: str, form: bool = False) -> HTMLResponse:
    """A page of escaped texts (``paragraphs`` are plain text, never markup)."""
    body = "".join(f"<p>{html.escape(text)}</p>" for text in paragraphs)
    if form:
        body += '<form method="post"><button type="submit">Acknowledge</button></form>'
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex">'
        f"<title>{html.escape(title)} · fieldhub</title>"
        '<link rel="stylesheet" href="/static/css/app.css"></head>'
        f'<body><main class="ack"><h1>{html.escape(title)}</h1>{body}</main></body></html>'
    )
    return HTMLResponse(document, status_code=status, headers=_HEADERS)


_NOT_FOUND: Final = (404, "Not found", "There is no page at this address.")


def _when(ms: int | None) -> str:
    if ms is None:
        return "an unknown time"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _summary(hub: Hub, alarm: AlarmRecord) -> str:
    rule = hub.alarms.engine.index.rules.get(alarm.rule_id)
    what = rule.name if rule is not None else alarm.rule_id
    return (
        f"[{alarm.severity.upper()}] {what} on {alarm.device_id}, raised {_when(alarm.raised_at)}:"
        f" {alarm.message}"
    )


def _settled(hub: Hub, alarm: AlarmRecord) -> HTMLResponse:
    """The page of an alarm someone already took (or that ended)."""
    if alarm.state == "acknowledged" or alarm.acknowledged_by is not None:
        return _page(
            200,
            "Already acknowledged",
            _summary(hub, alarm),
            f"Acknowledged by {alarm.acknowledged_by} at {_when(alarm.acknowledged_at)}.",
        )
    return _page(
        200,
        "Alarm cleared",
        _summary(hub, alarm),
        f"Cleared at {_when(alarm.cleared_at)}: {alarm.clear_reason or 'no reason given'}.",
    )


async def _claim(links: AckLinks, token: str) -> LinkClaim | HTMLResponse:
    """The link's claim, or the page that refuses it."""
    try:
        claim = links.check(token)
    except LinkForged:
        return _page(*_NOT_FOUND)
    except LinkExpired:
        return _page(
            410,
            "Link expired",
            "This acknowledge link has expired. Open the alarm on the hub's dashboard.",
        )
    if await links.was_used(claim):
        return _used()
    return claim


def _used() -> HTMLResponse:
    return _page(
        410,
        "Link already used",
        "This acknowledge link was used already; each link works once.",
        "Open the alarm on the hub's dashboard to see who took it.",
    )


async def _serve(request: Request) -> Response:
    hub: Hub = request.app.state.hub
    links = hub.ack_links
    if links is None:  # the hub has no public address: it made no links
        return _page(*_NOT_FOUND)
    claim = await _claim(links, request.path_params["token"])
    if isinstance(claim, HTMLResponse):
        return claim
    try:
        alarm = await hub.alarms.alarm(claim.alarm_id)
    except NotFound:
        return _page(*_NOT_FOUND)
    if alarm.state != "active":
        return _settled(hub, alarm)
    if request.method != "POST":
        return _page(
            200,
            "Acknowledge this alarm?",
            _summary(hub, alarm),
            "Acknowledging tells everyone you are taking care of it and stops its reminders.",
            form=True,
        )
    try:
        await links.spend(claim)
    except LinkUsed:
        return _used()
    client = request.client.host if request.client else ""
    try:
        alarm = await hub.alarms.acknowledge(
            claim.alarm_id, actor=claim.actor, comment=COMMENT, source=client
        )
    except Conflict:  # taken (or cleared) between the look and the click
        return _settled(hub, await hub.alarms.alarm(claim.alarm_id))
    return _page(
        200,
        "Acknowledged",
        _summary(hub, alarm),
        f"You acknowledged it at {_when(alarm.acknowledged_at)}; its reminders stop.",
    )


def install(app: FastAPI) -> None:
    """Serve ``/ack/{token}`` (GET, HEAD, POST) and keep tokens out of the access log."""
    app.router.routes.append(Route("/ack/{token}", _serve, methods=["GET", "HEAD", "POST"]))
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _HideAckTokens) for f in access.filters):
        access.addFilter(_HideAckTokens())
