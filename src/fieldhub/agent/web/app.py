"""The technician page: log in with the local password, see the device, press a button.

Routes: ``GET /`` (the page), ``GET/POST /login``, ``POST /logout``, ``POST /action``,
``GET /style.css``. Every POST must come from the page itself: its ``Origin`` (or, failing
that, its ``Referer``) must be this server as the browser addressed it, and, once logged in,
the form must carry the session's CSRF token. The session cookie is ``HttpOnly`` and
``SameSite=Strict`` (and ``Secure`` over https). Answers forbid framing, caching and any
script.

``pages`` (and with it ``html``) is imported by the first page view, h11 by the first
connection (``http.py``): an agent nobody visits does not carry them, 0.7 MB of its RSS
together, measured (``auth.py`` says why the page's imports wait).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import TracebackType
from typing import Final, Self

import msgspec

from fieldhub.agent.actions import ActionError, ActionInfo
from fieldhub.agent.web.auth import PasswordCheck, Session, Sessions
from fieldhub.agent.web.http import HttpServer, Request, Response
from fieldhub.agent.web.view import AgentView
from fieldhub.lockout import Lockout
from fieldhub.logthrottle import LogThrottle, held_back
from fieldhub.protocol.actions import TypeName

__all__ = ["COOKIE", "TechnicianPage", "parse_listen"]

log = logging.getLogger(__name__)

COOKIE: Final = "fh_agent_session"
_SECURITY_HEADERS: Final = [
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; "
        "base-uri 'none'",
    ),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("Cache-Control", "no-store"),
]


def parse_listen(listen: str) -> tuple[str, int]:
    """``"0.0.0.0:8081"`` / ``"[::]:8081"`` → host and port.

    Raises:
        ValueError: no port, or not a number in 0..65535.
    """
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"web.listen must be HOST:PORT, not {listen!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


class TechnicianPage:
    """Serves the page for ``view`` while entered.

    Args:
        view: what to show and how to run actions.
        password_hash: argon2 hash of the page's password (``web.password_hash``).
        host, port: where to listen (``port=0``: any free port; see :attr:`port`).
        events_shown: how many recent events the page lists.
    """

    def __init__(
        self,
        view: AgentView,
        password_hash: str,
        *,
        host: str = "0.0.0.0",
        port: int = 8081,
        events_shown: int = 50,
    ) -> None:
        self._view = view
        self._password = PasswordCheck(password_hash)
        self._sessions = Sessions()
        # Per client address: 5 failures, then 1, 2, 4 … s locked (at most 5 min).
        self._throttle = Lockout(free=5, max_lock_s=300.0, max_keys=1024)
        self._log_throttle = LogThrottle()
        self._events_shown = events_shown
        self._server = HttpServer(self.handle, host, port)

    @property
    def port(self) -> int:
        """The port the page listens on."""
        return self._server.port

    async def __aenter__(self) -> Self:
        await self._server.__aenter__()
        log.info("technician page on port %d", self.port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._server.__aexit__(exc_type, exc, tb)

    async def handle(self, request: Request) -> Response:
        """Answer one request (public for tests that skip the socket)."""
        route = (request.method, request.path)
        if route == ("GET", "/style.css"):
            from fieldhub.agent.web import pages  # at the first page view (module docstring)

            return Response(200, pages.STYLESHEET, [("Content-Type", "text/css")])
        if request.method == "POST" and not _same_origin(request):
            self._warn("cross-site", f"cross-site POST {request.path} from {request.client}")
            return _text(403, "cross-site request refused")
        token = _cookie(request, COOKIE)
        session = self._sessions.get(token)
        if route == ("GET", "/login"):
            return _redirect("/") if session else self._login_page(200)
        if route == ("POST", "/login"):
            return await self._login(request)
        if route == ("GET", "/"):
            return self._page(session) if session else _redirect("/login")
        if request.method == "POST" and request.path in ("/logout", "/action"):
            form = request.form()
            if session is None or not session.csrf_ok(form.get("csrf", "")):
                self._warn("csrf", f"POST {request.path} without a valid CSRF token")
                return _text(403, "session expired or CSRF token missing; reload the page")
            if request.path == "/logout":
                self._sessions.end(token)
                return _redirect("/login", f"{COOKIE}=; Max-Age=0; Path=/; HttpOnly")
            await self._action(session, form, request.client)
            return _redirect("/#actions")
        if request.path in ("/", "/login", "/logout", "/action", "/style.css"):
            return _text(405, "method not allowed")
        return _text(404, "not found")

    # -- routes ---------------------------------------------------------------------------

    async def _login(self, request: Request) -> Response:
        client = request.client
        wait = self._throttle.retry_after(client)
        if wait > 0:
            return self._login_page(429, f"Too many failed attempts; try again in {wait:.0f} s.")
        if not await self._password.verify(request.form().get("password", "")):
            self._throttle.failed(client)
            self._warn(("login", client), f"failed login on the technician page from {client}")
            return self._login_page(401, "Wrong password.")
        self._throttle.succeeded(client)
        token, _session = self._sessions.create()
        log.info("technician page: login from %s", client)
        secure = "; Secure" if request.secure else ""
        return _redirect("/", f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}")

    def _page(self, session: Session) -> Response:
        from fieldhub.agent.web import pages  # at the first page view (module docstring)

        flash, session.flash = session.flash, None
        body = pages.dashboard(
            device_id=self._view.device_id,
            csrf=session.csrf,
            flash=flash,
            units=self._view.units(),
            uplink=self._view.uplink_stats(),
            actions=self._view.actions(),
            events=self._view.recent_events(self._events_shown),
        )
        return _html(200, body)

    async def _action(self, session: Session, form: Mapping[str, str], client: str) -> None:
        name = form.get("action", "")
        offered = {action.name: action for action in self._view.actions()}
        info = offered.get(name)
        if info is None:
            session.flash = (False, f"unknown action {name[:64]!r}")
            return
        try:
            args = _form_args(info, form)
            outcome = await self._view.run_action(name, args)
        except (ActionError, ValueError) as exc:
            session.flash = (False, f"{name}: {exc}")
            return
        log.info(
            "technician page: %s run from %s: %s", name, client, "ok" if outcome.ok else "failed"
        )
        if outcome.ok:
            shown = msgspec.json.encode(outcome.result).decode()
            done = f" → {shown}" if outcome.result not in (None, {}) else ""
            session.flash = (True, f"{name}: done{done}")
        else:
            session.flash = (False, f"{name} failed: {outcome.error}")

    def _login_page(self, status: int, error: str = "") -> Response:
        from fieldhub.agent.web import pages  # at the first page view (module docstring)

        return _html(status, pages.login_page(self._view.device_id, error))

    def _warn(self, key: object, message: str) -> None:
        held = self._log_throttle.due(key)
        if held is not None:
            log.warning("technician page: %s%s", message, held_back(held))


def _form_args(info: ActionInfo, form: Mapping[str, str]) -> dict[str, bool | int | float | str]:
    """The action's arguments from its form, typed as declared (a checkbox left unticked is
    False: browsers do not send it)."""
    args: dict[str, bool | int | float | str] = {}
    for arg, kind in info.args.items():
        raw = form.get(f"arg.{arg}")
        if kind == "bool":
            args[arg] = raw is not None
        elif raw is None:
            continue  # the registry names it as missing
        else:
            args[arg] = _typed(arg, kind, raw.strip() if kind != "str" else raw)
    return args


def _typed(arg: str, kind: TypeName, raw: str) -> int | float | str:
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise ValueError(f"argument {arg!r} must be {kind}, not {raw[:32]!r}") from None
    return raw


def _same_origin(request: Request) -> bool:
    host = request.headers.get("host")
    if not host:
        return False
    expected = f"{'https' if request.secure else 'http'}://{host}"
    origin = request.headers.get("origin")
    if origin is not None:
        return origin == expected
    referer = request.headers.get("referer", "")
    return referer == expected or referer.startswith(expected + "/")


def _cookie(request: Request, name: str) -> str | None:
    for part in request.headers.get("cookie", "").split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value
    return None


def _html(status: int, body: bytes) -> Response:
    return Response(
        status, body, [("Content-Type", "text/html; charset=utf-8"), *_SECURITY_HEADERS]
    )


def _text(status: int, text: str) -> Response:
    headers = [("Content-Type", "text/plain; charset=utf-8"), *_SECURITY_HEADERS]
    return Response(status, text.encode(), headers)


def _redirect(location: str, cookie: str | None = None) -> Response:
    headers = [("Location", location), *_SECURITY_HEADERS]
    if cookie is not None:
        headers.append(("Set-Cookie", cookie))
    return Response(303, b"", headers)
