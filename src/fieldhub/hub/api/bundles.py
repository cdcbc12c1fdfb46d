"""Signed bundles: ``/api/bundle-keys``, ``/api/bundles`` and the devices' download.

Keys and uploads are an admin's (``bundles:write``): what may run on every device. Anyone who
may read devices may list bundles (a rollout names one). The download is public by route and
private by token: ``?token=`` is the signed, expiring link of one device's install command
(``rollouts/links.py``); a forged one is 404, an expired one 410, both counted. The token is
a credential, so uvicorn's access log shows ``token=<token>`` in its place.
"""

from __future__ import annotations

import logging
import re
from typing import Annotated, Final

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.responses import FileResponse

from fieldhub.hub.api.deps import hub_dependency
from fieldhub.hub.api.rollout_models import BundleOut, KeyIn, KeyOut
from fieldhub.hub.api.security import client_address, require
from fieldhub.hub.app import Hub
from fieldhub.hub.auth import Permission, Principal
from fieldhub.hub.rollouts import BundleNotFound

router = APIRouter(tags=["bundles"])
HubDep = Annotated[Hub, Depends(hub_dependency)]
Reader = Annotated[Principal, require(Permission.DEVICES_READ)]
Admin = Annotated[Principal, require(Permission.BUNDLES_WRITE)]
KeyReader = Annotated[Principal, require(Permission.HUB_READ)]
Anyone = Annotated[Principal, require(Permission.PUBLIC)]
_TOKEN_IN_QUERY: Final = re.compile(r"([?&]token=)[^&\s\"]+")


class _HideDownloadTokens(logging.Filter):
    """Puts ``token=<token>`` for a download token in access-log records."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _TOKEN_IN_QUERY.sub(r"\1<token>", a) if isinstance(a, str) else a
                for a in record.args
            )
        return True


def install(app: FastAPI) -> None:
    """Serve the routes and keep download tokens out of the access log."""
    app.include_router(router)
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _HideDownloadTokens) for f in access.filters):
        access.addFilter(_HideDownloadTokens())


@router.get("/api/bundle-keys", summary="Public keys bundles are checked against")
async def list_keys(hub: HubDep, who: KeyReader) -> list[KeyOut]:
    """Every registered key, revoked ones too."""
    return [KeyOut.of(key) for key in await hub.bundles.keys()]


@router.post("/api/bundle-keys", status_code=201, summary="Register a public key")
async def add_key(request: Request, hub: HubDep, who: Admin, body: KeyIn) -> KeyOut:
    """Bundles signed by this key's private half may be uploaded (the hub never sees that
    half), until ``expires_at`` if given. A key that is not one is 422 on ``public_key``; one
    registered before, 409."""
    record = await hub.bundles.add_key(
        body.public_key,
        body.name,
        expires_at=body.expires_at,
        actor=who.actor,
        source=client_address(request),
    )
    return KeyOut.of(record)


@router.delete("/api/bundle-keys/{key_id}", status_code=204, summary="Revoke a public key")
async def revoke_key(request: Request, hub: HubDep, who: Admin, key_id: str) -> Response:
    """Bundles this key signed are refused from now on; a revoked key never comes back."""
    await hub.bundles.revoke_key(key_id, actor=who.actor, source=client_address(request))
    return Response(status_code=204)


@router.post(
    "/api/bundles",
    status_code=201,
    summary="Upload a signed bundle",
    responses={200: {"model": BundleOut, "description": "this very file was stored already"}},
    openapi_extra={
        "requestBody": {"content": {"application/octet-stream": {"schema": {"type": "string"}}}}
    },
)
async def upload(request: Request, response: Response, hub: HubDep, who: Admin) -> BundleOut:
    """The ``.fhb`` file as the raw body (``curl --data-binary @app-1.4.0.fhb``). It is
    verified against the registered keys: tampered, unsigned by a trusted key, not a bundle
    → 422 naming the reason code (``unknown_key``, ``key_expired``, …); over the size
    limit → 413. The same file again is 200; another file of the same name and version, 409."""
    data = await request.body()
    record, new = await hub.bundles.upload(data, actor=who.actor, source=client_address(request))
    response.status_code = 201 if new else 200
    return BundleOut.of(record)


@router.get("/api/bundles", summary="Bundles")
async def list_bundles(hub: HubDep, who: Reader) -> list[BundleOut]:
    """Every bundle, newest first."""
    return [BundleOut.of(record) for record in await hub.bundles.listing()]


@router.get("/api/bundles/{bundle_id}", summary="Get a bundle")
async def get_bundle(hub: HubDep, who: Reader, bundle_id: str) -> BundleOut:
    """A bundle and its manifest."""
    return BundleOut.of(await hub.bundles.get(bundle_id))


@router.delete("/api/bundles/{bundle_id}", status_code=204, summary="Delete a bundle")
async def delete_bundle(request: Request, hub: HubDep, who: Admin, bundle_id: str) -> Response:
    """Forget a bundle and its file; 409 while an unfinished rollout sends it."""
    await hub.bundles.delete(bundle_id, actor=who.actor, source=client_address(request))
    return Response(status_code=204)


@router.get(
    "/api/bundles/{bundle_id}/download",
    summary="Download a bundle (devices)",
    response_class=FileResponse,
    responses={206: {"description": "the part a Range asked for"}},
)
async def download(
    hub: HubDep,
    who: Anyone,
    bundle_id: str,
    token: Annotated[str, Query(max_length=400, description="the install command's token")],
) -> FileResponse:
    """The bundle's bytes for the device its install command's token names, with
    Content-Length, and the part asked for with ``Range`` (a download that broke resumes).
    A forged token is 404, an expired one 410."""
    hub.rollouts.links.check(token, bundle_id)
    path = hub.bundles.path(bundle_id)
    if not path.is_file():
        raise BundleNotFound(f"no bundle {bundle_id!r}")
    return FileResponse(
        path,
        media_type="application/octet-stream",
        filename=f"{bundle_id}.fhb",
        headers={"Cache-Control": "no-store"},
    )
