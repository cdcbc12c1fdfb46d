"""Media: devices upload to signed URLs; users of the device's sites download and preview.

- ``PUT /api/uploads/{device}/{sha256}?expires=…&sig=…``: the bytes of an announced object
  (docs/protocol.md, "media"). The URL is the credential: devices have no user session. Its
  body is streamed to disk, never held whole, and exempt from the API's 1 MiB body limit (the
  hub's media limit applies instead). ``HEAD`` says how much the hub holds.
- ``GET /api/media/{id}`` and ``/api/media/{id}/thumbnail``: ``events:read`` and the device's
  site, exactly as devices; any other caller gets the 404 of a media that does not exist. The
  hub streams the bytes from its store (the data folder or S3) itself rather than redirecting
  to a presigned S3 URL: such a URL would let whoever holds it read the object until it
  expires, past the access rules (and the store need not be reachable from users).
- ``GET /api/media-links/{device}/{sha256}?expires=…&sig=…``: the object behind a download
  link of an alarm notification; the link is the credential (the recipient of a message has
  no session), as an upload URL is the device's.

Signatures never reach a log: uvicorn's access log shows ``sig=<sig>``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable
from typing import Annotated, Any, Final
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.requests import ClientDisconnect

from fieldhub.hub.api.deps import hub_dependency
from fieldhub.hub.api.errors import error
from fieldhub.hub.api.fields import RowId
from fieldhub.hub.api.security import require
from fieldhub.hub.app import Hub
from fieldhub.hub.auth import Permission, Principal
from fieldhub.hub.media.links import DOWNLOAD_PREFIX
from fieldhub.hub.media.service import MediaNotFound, MediaRecord, Stored
from fieldhub.protocol.media import SHA256_PATTERN
from fieldhub.protocol.messages import MAX_MILLIS
from fieldhub.protocol.topics import DEVICE_ID_PATTERN

__all__ = ["UPLOAD_PREFIX", "install", "links", "router", "uploads"]

UPLOAD_PREFIX: Final = "/api/uploads/"
_SIG_IN_QUERY: Final = re.compile(r"sig=[^&\s\"]+")
_SAFE_NAME: Final = re.compile(r"[^A-Za-z0-9 _.+-]")

router = APIRouter(prefix="/api/media", tags=["media"])
uploads = APIRouter(prefix="/api/uploads", tags=["media"])
links = APIRouter(prefix=DOWNLOAD_PREFIX, tags=["media"])
HubDep = Annotated[Hub, Depends(hub_dependency)]
Reader = Annotated[Principal, require(Permission.EVENTS_READ)]
Anyone = Annotated[Principal, require(Permission.PUBLIC)]
DeviceId = Annotated[str, Path(pattern=DEVICE_ID_PATTERN)]
Sha256 = Annotated[str, Path(pattern=SHA256_PATTERN)]
Expires = Annotated[
    int, Query(ge=0, le=MAX_MILLIS, description="epoch ms, from the URL the hub answered")
]
Signature = Annotated[str, Query(min_length=1, max_length=64)]


class _HideSignatures(logging.Filter):
    """Puts ``sig=<sig>`` for upload signatures in access-log records (a URL is a credential)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _SIG_IN_QUERY.sub("sig=<sig>", a) if isinstance(a, str) else a for a in record.args
            )
        return True


def install() -> None:
    """Keep upload signatures out of uvicorn's access log."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _HideSignatures) for f in access.filters):
        access.addFilter(_HideSignatures())


async def _body(request: Request) -> AsyncIterator[bytes]:
    """The request body as it arrives; a client that goes away is a ``ConnectionError``."""
    try:
        async for chunk in request.stream():
            if chunk:
                yield chunk
    except ClientDisconnect:
        raise ConnectionError("the client went away") from None


@uploads.put(
    "/{device_id}/{sha256}",
    summary="Upload an announced object (signed URL)",
    responses={
        201: {"description": "complete: checked and linked"},
        202: {"description": "partial kept: resume from `received`"},
        409: {"description": "the range does not start at `received`"},
        410: {"description": "the URL expired, or the object is complete already"},
        413: {"description": "larger than announced, or than the hub's limit"},
        415: {"description": "the content is not of the announced type"},
        507: {"description": "the media store is full"},
    },
)
async def put_upload(
    hub: HubDep,
    _who: Anyone,
    request: Request,
    device_id: DeviceId,
    sha256: Sha256,
    expires: Expires,
    sig: Signature,
) -> JSONResponse:
    """The bytes from ``received`` to the end, with ``Content-Range`` when resuming; 422 when
    they do not hash to the announced SHA-256 (or their total is short of the announced size),
    in the API's one 422 shape."""
    outcome = await hub.media.uploads.put(
        device_id,
        sha256,
        (expires, sig),
        request.headers.get("content-range"),
        _body(request),
    )
    body = outcome.body
    if outcome.status == 422:
        body = {**body, "detail": [error(str(body["detail"]), ("body",), outcome.code or "")]}
    return JSONResponse(body, status_code=outcome.status)


@uploads.head("/{device_id}/{sha256}", summary="How much of an upload the hub holds")
async def head_upload(
    hub: HubDep,
    _who: Anyone,
    device_id: DeviceId,
    sha256: Sha256,
    expires: Expires,
    sig: Signature,
) -> Response:
    """``Upload-Received``: the bytes to resume from."""
    received = await hub.media.uploads.received(device_id, sha256, (expires, sig))
    return Response(headers={"Upload-Received": str(received)})


async def _visible(hub: Hub, who: Principal, media_id: int) -> MediaRecord:
    """The media, if its device is one the caller sees (else the 404 of no such media)."""
    record = await hub.media.get(media_id)
    entry = hub.directory.get(record.device_id)
    if entry is None or not who.sees(entry.labels):
        raise MediaNotFound(f"media {media_id} does not exist")
    return record


def _disposition(name: str, kind: str) -> str:
    """Open images in the browser, download the rest; the name reduced to safe characters."""
    safe = _SAFE_NAME.sub("_", name) or "media"
    how = "inline" if kind.startswith("image/") else "attachment"
    return f"{how}; filename=\"{safe}\"; filename*=UTF-8''{quote(safe)}"


_UNAVAILABLE: Final[dict[int | str, dict[str, Any]]] = {
    503: {"description": "the media store cannot be read now"}
}


async def _from_store(read: Awaitable[Stored]) -> Stored:
    """The bytes ``read`` gives, or a 503 when the store cannot be read (an S3 outage)."""
    try:
        return await read
    except MediaNotFound:
        raise
    except OSError:
        raise HTTPException(503, "the media store cannot be read now; try again") from None


def _send(stored: Stored, kind: str, headers: dict[str, str]) -> StreamingResponse:
    """``stored`` under ``kind``, streamed (read in a worker thread), cached privately."""
    return StreamingResponse(
        stored.chunks,
        media_type=kind,
        headers={
            **headers,
            "Content-Length": str(stored.size),
            "Cache-Control": "private, max-age=86400, immutable",
        },
    )


def _file(record: MediaRecord, stored: Stored) -> StreamingResponse:
    """The object as the device sent it, under its type."""
    disposition = {"Content-Disposition": _disposition(record.name, record.type)}
    return _send(stored, record.type, disposition)


@router.get(
    "/{media_id}",
    summary="Download a media object",
    response_class=StreamingResponse,
    responses=_UNAVAILABLE,
)
async def get_media(hub: HubDep, who: Reader, media_id: RowId) -> StreamingResponse:
    """The object as the device sent it, under its type; 404 while it is still coming."""
    record = await _visible(hub, who, media_id)
    return _file(record, await _from_store(hub.media.content(record)))


@links.get(
    "/{device_id}/{sha256}",
    summary="Download a media object through a notification's link",
    response_class=StreamingResponse,
    responses={
        404: {"description": "no such link or media, or it has not arrived yet"},
        410: {"description": "the link expired"},
        **_UNAVAILABLE,
    },
)
async def get_linked_media(
    hub: HubDep, _who: Anyone, device_id: DeviceId, sha256: Sha256, expires: Expires, sig: Signature
) -> StreamingResponse:
    """The object a download link names (the link is the credential); 404 while it is still
    coming: the same link works once it has arrived, until it expires."""
    try:
        record, stored = await hub.media.linked(device_id, sha256, expires, sig)
    except OSError:
        raise HTTPException(503, "the media store cannot be read now; try again") from None
    return _file(record, stored)


@router.get(
    "/{media_id}/thumbnail",
    summary="A media object's thumbnail",
    response_class=StreamingResponse,
    responses=_UNAVAILABLE,
)
async def get_thumbnail(hub: HubDep, who: Reader, media_id: RowId) -> StreamingResponse:
    """A JPEG of at most 320 by 240 pixels made by the hub; 404 for non-images and pending ones."""
    record = await _visible(hub, who, media_id)
    return _send(await _from_store(hub.media.thumbnail(record)), "image/jpeg", {})
