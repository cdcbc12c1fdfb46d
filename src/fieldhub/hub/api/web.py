"""The dashboard: static pages and their scripts, served by the hub at ``/``.

The pages are plain files (``fieldhub/hub/web/``: HTML, JavaScript modules, CSS, and uPlot as
a vendored static asset): nothing is built, nothing is rendered on the server, and a page holds
no data. Everything a page shows it fetches from the REST API and the live WebSocket with the
browser's session cookie, so the API's authorization is the only one there is; the files are
public like any login page.

Every answer carries a Content-Security-Policy that allows scripts, styles and connections
from the hub's own origin only (no inline script, no ``eval``; ``api/headers.py`` sets it on
every answer of the hub), so even a device name that slipped into markup could not run; the
pages also never put API data into HTML (they set ``textContent``). Files are revalidated on
every load (``no-cache`` + ETag): after an upgrade a browser never runs yesterday's module next
to today's.

What every page shares, the head's links and the top bar with its navigation, is written once in
``web/pages/parts/`` and put into each page where it says ``<!-- fieldhub:head -->`` and
``<!-- fieldhub:top -->``, once, when the hub starts: a new page is one line in the bar, not one
in every file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from fieldhub.hub.api.headers import CONTENT_SECURITY_POLICY

__all__ = ["CONTENT_SECURITY_POLICY", "PAGES", "WEB_ROOT", "assemble", "install"]

WEB_ROOT = Path(__file__).resolve().parent.parent / "web"
"""Where the dashboard's files are (inside the package, so a wheel ships them)."""

_HEADERS = {"Cache-Control": "no-cache"}  # the security headers: api/headers.py, for all

PAGES = {
    "/": "overview.html",
    "/login": "login.html",
    "/devices/{device_id}": "device.html",
    "/alarms": "alarms.html",
    "/alarm-rules": "alarm-rules.html",
    "/events": "events.html",
    "/rollouts": "rollouts.html",
    "/notifications": "notifications.html",
    "/manage": "manage.html",
}
"""Address of each page → its file under ``web/pages/``. A device page is one file for every
device: its script reads the id from the address."""


class _Assets(StaticFiles):
    """The scripts, styles and vendored libraries, revalidated on every load."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(_HEADERS)
        return response


_PARTS = {"head": "parts/head.html", "top": "parts/top.html"}
"""Marker name (``<!-- fieldhub:NAME -->`` on a line of its own) → the shared part put there."""


def assemble(file: Path) -> bytes:
    """The page in ``file`` with its shared parts in place.

    Raises:
        FileNotFoundError: the page or a part is missing from the package.
    """
    text = file.read_text(encoding="utf-8")
    for name, part in _PARTS.items():
        marker = f"  <!-- fieldhub:{name} -->\n"
        if marker in text:
            text = text.replace(marker, (WEB_ROOT / "pages" / part).read_text(encoding="utf-8"))
    return text.encode()


def _page(path: str, file: Path) -> Route:
    body = assemble(file)
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {**_HEADERS, "ETag": etag}

    async def serve(request: Request) -> Response:
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type="text/html; charset=utf-8", headers=headers)

    return Route(path, serve, methods=["GET", "HEAD"], name=f"page:{file.stem}")


def install(app: FastAPI) -> None:
    """Serve the dashboard's pages at their addresses and its assets under ``/static/``.

    Plain Starlette routes, outside the OpenAPI spec: they are not API, need no permission,
    and carry no data. Call after the API's routers so ``/api/...`` always wins.

    Raises:
        FileNotFoundError: the package was installed without its ``web/`` files.
    """
    pages = WEB_ROOT / "pages"
    for path, name in PAGES.items():
        file = pages / name
        if not file.is_file():
            raise FileNotFoundError(f"dashboard page {file} is missing from the package")
        app.router.routes.append(_page(path, file))
    app.router.routes.append(
        Mount("/static", app=_Assets(directory=WEB_ROOT, follow_symlink=False), name="static")
    )
