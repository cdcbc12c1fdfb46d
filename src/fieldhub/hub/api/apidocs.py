"""The interactive API docs at ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc).

FastAPI's own docs pages start their viewer with an inline script and load it from a CDN by
a floating major version; under the hub's Content-Security-Policy (no inline script, nothing
from another origin) they could not run. These pages are the hub's own: the viewer is pinned to
one exact version and loaded with Subresource Integrity (a changed file on the CDN does not
run), started by a script of the hub (``web/js/apidocs.js``, no inline script), and each page
carries a policy that allows that CDN and nothing else besides the hub (``api/headers.py`` keeps
a route's own policy).

Why a CDN and not files of the hub: the two viewers are 3 MB of minified JavaScript that the
dashboard does not need. A hub whose browser cannot reach the CDN (offline) still works, and
its docs pages say where the spec is (``/openapi.json``) instead of staying blank.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from html import escape

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from fieldhub.hub.api.headers import policy

__all__ = ["CDN", "DOCS_POLICY", "REDOC", "SWAGGER_UI", "install"]

CDN = "https://cdn.jsdelivr.net"


@dataclass(frozen=True)
class Asset:
    """A file of the CDN with its SRI digest (``sha384-`` of the file in the npm package)."""

    url: str
    integrity: str


SWAGGER_UI = (
    Asset(
        f"{CDN}/npm/swagger-ui-dist@5.36.0/swagger-ui-bundle.js",
        "sha384-fUpRgC19yPykTqzdrUbdAg8NTiu16NEKf9U12J+IJWCg8/1mEI8f2+PEIz60Wyd+",
    ),
    Asset(
        f"{CDN}/npm/swagger-ui-dist@5.36.0/swagger-ui.css",
        "sha384-z/AtSaOHGn5MJ5auAHXUypohywlIWLBZo1jeGmhdpVIbCnFhxAH92cwdV41oyINc",
    ),
)
"""Swagger UI's script and style sheet."""

REDOC = Asset(
    f"{CDN}/npm/redoc@2.5.4/bundles/redoc.standalone.js",
    "sha384-w447zOpYfw/1Tv/5AK9NfHTlQIqE3RVR6KY62jCyy9zNDgO64cMwGGP1Fj0zJVf5",
)
"""ReDoc's script (its styles it makes itself)."""

DOCS_POLICY = policy(
    default_src="'self'",
    script_src=f"'self' {CDN}",
    # Both viewers style their elements from script (style attributes, <style> elements):
    # style injection cannot run code, and no script is allowed inline.
    style_src=f"'self' {CDN} 'unsafe-inline'",
    img_src="'self' data: https://cdn.redoc.ly",  # ReDoc's "API docs by Redocly" logo
    font_src="'self' data:",
    connect_src="'self'",  # the spec, and "Try it out" against this hub
    worker_src="'self' blob:",  # ReDoc's search runs in a worker made from a blob
    object_src="'none'",
    base_uri="'none'",
    form_action="'self'",
    frame_ancestors="'none'",
)
"""The policy of the two docs pages."""

_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{title}</title>
  <link rel="icon" href="/static/img/icon.svg" type="image/svg+xml">
  {head}
</head>
<body data-viewer="{viewer}" data-spec="{spec}">
  <div id="api-docs"></div>
  <noscript>The API docs need JavaScript; the spec itself is at {spec}.</noscript>
  <script src="{script.url}" integrity="{script.integrity}" crossorigin="anonymous"></script>
  <script src="/static/js/apidocs.js"></script>
</body>
</html>
"""


def _page(title: str, viewer: str, spec: str, script: Asset, head: str = "") -> str:
    return _PAGE.format(
        title=escape(title), head=head, viewer=viewer, spec=escape(spec), script=script
    )


def install(app: FastAPI) -> None:
    """Serve ``/docs`` and ``/redoc`` for ``app``, made with ``docs_url=None, redoc_url=None``.

    Raises:
        ValueError: the app still has FastAPI's own docs pages, or has no OpenAPI spec.
    """
    if app.docs_url is not None or app.redoc_url is not None or app.openapi_url is None:
        raise ValueError("create the app with docs_url=None, redoc_url=None and an openapi_url")
    spec = app.openapi_url
    script, style = SWAGGER_UI
    pages = {
        "/docs": _page(
            f"{app.title} API · Swagger UI",
            "swagger-ui",
            spec,
            script,
            head=f'<link rel="stylesheet" href="{style.url}" integrity="{style.integrity}" '
            'crossorigin="anonymous">',
        ),
        "/redoc": _page(f"{app.title} API · ReDoc", "redoc", spec, REDOC),
    }
    for path, html in pages.items():
        app.router.routes.append(Route(path, _serving(html), methods=["GET", "HEAD"]))


def _serving(html: str) -> Callable[[Request], Awaitable[HTMLResponse]]:
    async def serve(_request: Request) -> HTMLResponse:
        return HTMLResponse(html, headers={"Content-Security-Policy": DOCS_POLICY})

    return serve
