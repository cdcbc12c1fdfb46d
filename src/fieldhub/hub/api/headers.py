"""Security headers on every HTTP answer of the hub, in one middleware.

Pages, static files, JSON, errors (404, 422, 413) and the API docs all pass through it, so no
route can forget them: ``X-Content-Type-Options: nosniff`` (a JSON answer is never sniffed
into HTML or script), ``X-Frame-Options: DENY`` and ``frame-ancestors 'none'`` (no framing,
no click-jacking), ``Referrer-Policy: same-origin``, and a Content-Security-Policy that allows
scripts, styles and connections from the hub's own origin only (no inline script, no ``eval``).

A route that needs a different policy sets its own ``Content-Security-Policy`` header and the
middleware keeps it; only the API docs do (``api/apidocs.py``: their viewers style from script).
The other headers are the same for every answer.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_SECURITY_POLICY", "SECURITY_HEADERS", "SecurityHeaders", "policy"]


def policy(**directives: str) -> str:
    """A CSP from ``directive_name="sources"`` (underscores for dashes), in the given order."""
    return "; ".join(f"{name.replace('_', '-')} {value}" for name, value in directives.items())


CONTENT_SECURITY_POLICY = policy(
    default_src="'self'",
    script_src="'self'",
    style_src="'self'",
    img_src="'self' data:",
    connect_src="'self'",  # REST and the /api/live WebSocket of the same origin
    object_src="'none'",
    base_uri="'none'",
    form_action="'self'",
    frame_ancestors="'none'",
)
"""The policy of every answer that does not set its own."""

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
"""Headers every answer carries, whatever its route says."""


class SecurityHeaders:
    """Add the security headers to every HTTP answer (pure ASGI: streamed bodies untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                if "content-security-policy" not in headers:
                    headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
            await send(message)

        await self.app(scope, receive, send_with_headers)
