"""The interactive API docs at ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), served by the hub.

FastAPI's own docs pages start their viewer with an inline script and load it from a CDN by
a floating major version: blank on a site without internet, and not allowed by the hub's
Content-Security-Policy (no inline script, nothing from another origin). These pages load
their viewer from the hub itself, vendored in ``web/vendor/`` (``swagger-ui/``, ``redoc/``:
the npm packages' files unchanged, their README says which and how to upgrade), with
Subresource Integrity all the same (a file changed on disk does not run), started by a script
of the hub (``web/js/apidocs.js``, no inline script), under a policy that allows the hub's own
origin and nothing else (``api/headers.py`` keeps a route's own policy).

The two viewers are 3 MB of minified JavaScript that the dashboard never loads: a browser
fetches them only on these two pages, and revalidates them with an ETag.
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

__all__ = ["DOCS_POLICY", "REDOC", "SWAGGER_UI", "install"]

_VENDOR = "/static/vendor"


@dataclass(frozen=True)
class Asset:
    """A vendored file with its SRI digest (``sha384-`` of the file in the npm package)."""

    url: str
    integrity: str


SWAGGER_UI = (
    Asset(
        f"{_VENDOR}/swagger-ui/swagger-ui-bundle.js",
        "sha384-fUpRgC19yPykTqzdrUbdAg8NTiu16NEKf9U12J+IJWCg8/1mEI8f2+PEIz60Wyd+",
    ),
    Asset(
        f"{_VENDOR}/swagger-ui/swagger-ui.css",
        "sha384-z/AtSaOHGn5MJ5auAHXUypohywlIWLBZo1jeGmhdpVIbCnFhxAH92cwdV41oyINc",
    ),
)
"""Swagger UI's script and style sheet (swagger-ui-dist 5.36.0)."""

REDOC = Asset(
    f"{_VENDOR}/redoc/redoc.standalone.js",
    "sha384-w447zOpYfw/1Tv/5AK9NfHTlQIqE3RVR6KY62jCyy9zNDgO64cMwGGP1Fj0zJVf5",
)
"""ReDoc's script (redoc 2.5.4; its styles it makes itself)."""

DOCS_POLICY = policy(
    default_src="'self'",
    script_src="'self'",
    # Both viewers style their elements from script (style attributes, <style> elements):
    # style injection cannot run code, and no script is allowed inline.
    style_src="'self' 'unsafe-inline'",
    img_src="'self' data:",  # ReDoc's "API docs by Redocly" logo (another host) stays away
    font_src="'self' data:",
    connect_src="'self'",  # the spec, and "Try it out" against this hub
    worker_src="'self' blob:",  # ReDoc's search runs in a worker made from a blob
    object_src="'none'",
    base_uri="'none'",
    form_action="'self'",
    frame_ancestors="'none'",
)
"""The policy of the two docs pages: the hub's own origin only."""

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
  <script src="{script.url}" integrity="{script.integrity}"></script>
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
            head=f'<link rel="stylesheet" href="{style.url}" integrity="{style.integrity}">',
        ),
        "/redoc": _page(f"{app.title} API · ReDoc", "redoc", spec, REDOC),
    }
    for path, html in pages.items():
        app.router.routes.append(Route(path, _serving(html), methods=["GET", "HEAD"]))


def _serving(html: str) -> Callable[[Request], Awaitable[HTMLResponse]]:
    async def serve(_request: Request) -> HTMLResponse:
        return HTMLResponse(html, headers={"Content-Security-Policy": DOCS_POLICY})

    return serve
