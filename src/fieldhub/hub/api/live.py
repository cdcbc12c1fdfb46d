"""``/api/live``: the WebSocket that pushes committed data to pages and programs (docs/live.md).

Authentication happens before the socket is accepted, with the same credentials as REST:

- ``Authorization: Bearer fht_…`` (programs; a browser cannot set headers on a WebSocket);
- the session cookie (the dashboard), and then the ``Origin`` header must be the hub's own:
  a browser sends cookies with a WebSocket opened by any site (there is no CORS and no CSRF
  token on a WebSocket), so without this check another site could read the live data of a
  logged-in user (cross-site WebSocket hijacking).

A refused handshake is an HTTP answer with a JSON ``detail`` (401 no or bad credentials, 403
foreign origin or no ``devices:read``, 400 a bad ``frames`` parameter). Once open, the
connection has two tasks: one reads the client's requests and answers them, one sends what
the fan-out (``hub/live/fanout.py``) queued for it. Neither waits for the other, and the
fan-out waits for neither.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Literal, cast

import msgspec
from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketDisconnect

from fieldhub.hub.api.security import SESSION_COOKIE, refusal
from fieldhub.hub.app import Hub
from fieldhub.hub.auth import Permission, Principal
from fieldhub.hub.auth.authn import Credential, CredentialsRejected
from fieldhub.hub.live.client import TOPICS, LiveClient, frame
from fieldhub.hub.live.fanout import LiveError, LiveHub
from fieldhub.protocol.topics import DEVICE_ID_PATTERN

router = APIRouter()
MAX_REQUEST_BYTES = 65_536
"""A request longer than this is answered with an error (a subscription to 10,000 listed ids
fits in about 700 kB of JSON only when the ids are long: list fewer, or subscribe by label)."""
MAX_DEVICES = 10_000
_YIELD_EVERY = 64
"""Frames sent in a row before letting other connections' tasks run."""

DeviceId = Annotated[str, msgspec.Meta(pattern=DEVICE_ID_PATTERN)]
Topic = Literal["telemetry", "event", "presence", "state", "command", "device", "alarm"]


class _Subscribe(msgspec.Struct, tag_field="op", tag="subscribe", kw_only=True):
    devices: (
        Annotated[list[DeviceId], msgspec.Meta(min_length=1, max_length=MAX_DEVICES)] | None
    ) = None
    labels: Annotated[dict[str, str], msgspec.Meta(min_length=1, max_length=32)] | None = None
    all: bool = False
    topics: Annotated[list[Topic], msgspec.Meta(min_length=1)] | None = None


class _Unsubscribe(msgspec.Struct, tag_field="op", tag="unsubscribe", kw_only=True):
    sub: str


class _Ping(msgspec.Struct, tag_field="op", tag="ping", kw_only=True):
    pass


_Request = _Subscribe | _Unsubscribe | _Ping
_decode_request = msgspec.json.Decoder(_Request).decode


def own_origin(websocket: WebSocket) -> str:
    """The origin a page served by this hub has: scheme and the Host the browser asked for.

    Behind a TLS proxy the scheme is the proxy's (uvicorn applies X-Forwarded-Proto from
    trusted proxies), and the proxy must pass the Host header on as the browser sent it, port
    included (nginx: ``proxy_set_header Host $http_host``, deploy/nginx/fieldhub.conf).
    """
    secure = websocket.url.scheme in ("wss", "https")
    host = websocket.headers.get("host", "")
    return f"{'https' if secure else 'http'}://{host}".lower()


class _Refused(Exception):
    """The handshake is refused with HTTP ``status``, saying why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


async def _authenticate(websocket: WebSocket, hub: Hub) -> tuple[Principal, Credential]:
    """The caller and its credential.

    Raises:
        _Refused: no or bad credentials (401), a foreign origin or no permission (403).
    """
    authorization = websocket.headers.get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    credential: Credential | None = None
    if scheme.lower() == "bearer" and value.strip():
        credential = Credential("bearer", value.strip())
    elif authorization:
        raise _Refused(401, "use Authorization: Bearer <API token>")
    elif (cookie := websocket.cookies.get(SESSION_COOKIE)) is not None:
        origin = websocket.headers.get("origin", "").lower()
        if origin != own_origin(websocket):
            raise _Refused(403, "the session cookie is accepted only from the hub's own pages")
        credential = Credential("session", cookie)
    if credential is None:
        raise _Refused(401, "log in, or send an API token as Authorization: Bearer")
    try:
        principal = (await hub.auth.authenticator.resolve(credential)).principal
    except CredentialsRejected as exc:
        raise _Refused(401, str(exc)) from None
    if not principal.can(Permission.DEVICES_READ):
        raise _Refused(403, refusal(principal, Permission.DEVICES_READ))
    return principal, credential


@router.websocket("/api/live")
async def live(websocket: WebSocket) -> None:
    """Committed telemetry, events, presence, state, command and registry changes of the
    devices the caller subscribes to and may see (docs/live.md)."""
    hub = cast(Hub, websocket.app.state.hub)
    frames = websocket.query_params.get("frames", "object")
    if frames not in ("object", "array"):
        await _refuse(websocket, 400, "frames must be `object` (default) or `array`")
        return
    try:
        principal, credential = await _authenticate(websocket, hub)
    except _Refused as refused:
        await _refuse(websocket, refused.status, refused.reason)
        return
    await websocket.accept()
    client = hub.live.connect(principal, credential, array=frames == "array")
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(_read(websocket, client, hub.live), name="live-read")
            tasks.create_task(_write(websocket, client), name="live-write")
    finally:
        hub.live.disconnect(client)


async def _refuse(websocket: WebSocket, status: int, reason: str) -> None:
    """Refuse the handshake with an HTTP answer (or a plain 403 where the server cannot)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse({"detail": reason}, status_code=status))
    else:
        await websocket.close(code=1008, reason=reason)


async def _read(websocket: WebSocket, client: LiveClient, live: LiveHub) -> None:
    """Answer the client's requests until it leaves; a bad one gets an error, nothing more."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            client.left()
            return
        text = message.get("text")
        if text is None:
            client.put(_error("send JSON text frames, not binary ones"))
        elif len(text) > MAX_REQUEST_BYTES:
            client.put(_error(f"a request is at most {MAX_REQUEST_BYTES} bytes"))
        else:
            client.put(_answer(text, client, live))


def _answer(text: str, client: LiveClient, live: LiveHub) -> str:
    try:
        request = _decode_request(text)
    except msgspec.DecodeError as exc:
        return _error(f"bad request: {exc}")
    except RecursionError:  # msgspec recurses per level, also through fields it skips
        return _error("bad request: nested too deep")
    if isinstance(request, _Ping):
        return frame({"type": "pong"})
    try:
        if isinstance(request, _Unsubscribe):
            live.unsubscribe(client, request.sub)
            return frame({"type": "unsubscribed", "sub": request.sub})
        sub, devices = live.subscribe(
            client,
            devices=request.devices,
            labels=request.labels,
            everything=request.all,
            topics=request.topics or TOPICS,
        )
    except LiveError as exc:
        return _error(str(exc))
    return frame({"type": "subscribed", "sub": sub.id, "devices": devices})


def _error(message: str) -> str:
    return frame({"type": "error", "message": message})


async def _write(websocket: WebSocket, client: LiveClient) -> None:
    """Send what waits for the client, as it comes; close when the hub says so."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            await client.wake.wait()
            client.wake.clear()
            if client.gone:
                return
            if client.close_code is not None:
                await websocket.close(client.close_code, client.close_reason[:120])
                return
            texts = client.outbox.take()
            if not texts:
                continue
            if client.array:
                await websocket.send_text(f"[{','.join(texts)}]")
                continue
            for count, text in enumerate(texts, 1):
                if client.closing:
                    break
                await websocket.send_text(text)
                if count % _YIELD_EVERY == 0:  # a send to a writable socket never suspends
                    await asyncio.sleep(0)
