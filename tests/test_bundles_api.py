"""Bundles on the hub (issue 16): public keys registered by admins, uploads verified against
them and refused with their reason, files stored once and private, downloads only with a
device's token (Range for resuming), refusals counted, tokens kept out of the access log."""

from __future__ import annotations

import hashlib
import logging
import stat

import pytest

from fieldhub.bundles import SigningKey, make_bundle
from fieldhub.clock import now_ms
from fieldhub.hub.api import create_app
from fieldhub.hub.app import Hub
from tests.conftest import HubFactory, api_client

HOUR = 3_600_000
PAYLOAD = {"actions/hello.py": b"def run(args):\n    return {}\n"}


def signed(key: SigningKey, version: str = "1.0.0") -> bytes:
    return make_bundle(PAYLOAD, key, name="site-actions", version=version)


async def test_an_admin_registers_keys_and_uploads_only_what_a_trusted_key_signed(
    hub: Hub,
) -> None:
    trusted, stranger = SigningKey.generate(), SigningKey.generate()
    async with api_client(hub) as admin, api_client(hub, "operator", sites=["x"]) as operator:
        bad = await admin.post("/api/bundle-keys", json={"name": "k", "public_key": "not-a-key"})
        assert bad.status_code == 422
        assert bad.json()["detail"][0]["loc"] == ["body", "public_key"]
        key = {"name": "release", "public_key": trusted.public.to_text()}
        assert (await operator.post("/api/bundle-keys", json=key)).status_code == 403
        added = await admin.post("/api/bundle-keys", json=key)
        assert added.status_code == 201, added.text
        assert added.json()["key_id"] == trusted.public.key_id
        assert (await admin.post("/api/bundle-keys", json=key)).status_code == 409

        good = signed(trusted)
        tampered = bytearray(good)
        tampered[good.index(b"return {}") + 7] ^= 1  # one byte of the payload
        refusals = {
            "unknown_key": signed(stranger),
            "file_mismatch": bytes(tampered),
            "malformed": b"this is not a tar archive",
        }
        for reason, data in refusals.items():
            answer = await admin.post("/api/bundles", content=data)
            assert answer.status_code == 422, (reason, answer.text)
            assert answer.json()["detail"][0]["msg"].startswith(reason), answer.text
        assert "empty" in (await admin.post("/api/bundles", content=b"")).text  # 422
        assert hub.bundles.refusals == {
            "bad_key": 1,
            "unknown_key": 1,
            "file_mismatch": 1,
            "malformed": 2,
        }
        assert (await operator.post("/api/bundles", content=good)).status_code == 403

        first = await admin.post("/api/bundles", content=good)
        assert first.status_code == 201, first.text
        bundle = first.json()
        assert bundle["id"] == hashlib.sha256(good).hexdigest()
        assert (bundle["name"], bundle["version"], bundle["size"]) == (
            "site-actions",
            "1.0.0",
            len(good),
        )
        assert bundle["manifest"]["files"]["actions/hello.py"]["size"] == len(
            PAYLOAD["actions/hello.py"]
        )
        assert (await admin.post("/api/bundles", content=good)).status_code == 200  # same file
        other = make_bundle(PAYLOAD, trusted, name="site-actions", version="1.0.0", created_at=1)
        assert (await admin.post("/api/bundles", content=other)).status_code == 409
        path = hub.bundles.path(bundle["id"])
        assert path.read_bytes() == good
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

        # Operators see bundles (a rollout names one); the list is newest first.
        listed = (await operator.get("/api/bundles")).json()
        assert [b["id"] for b in listed] == [bundle["id"]]
        assert (await operator.get(f"/api/bundles/{bundle['id']}")).json()["version"] == "1.0.0"


async def test_a_revoked_key_signs_nothing_more_and_a_deleted_bundle_is_gone(hub: Hub) -> None:
    trusted = SigningKey.generate()
    key = {"name": "release", "public_key": trusted.public.to_text()}
    async with api_client(hub) as admin:
        assert (await admin.post("/api/bundle-keys", json=key)).status_code == 201
        bundle = (await admin.post("/api/bundles", content=signed(trusted))).json()
        path = hub.bundles.path(bundle["id"])

        # A revoked key signs nothing any more, and never comes back.
        gone = await admin.delete(f"/api/bundle-keys/{trusted.public.key_id}")
        assert gone.status_code == 204
        later = await admin.post("/api/bundles", content=signed(trusted, "1.1.0"))
        assert later.status_code == 422
        assert later.json()["detail"][0]["msg"].startswith("revoked_key")
        assert (await admin.post("/api/bundle-keys", json=key)).status_code == 409
        stale = {"bundle": bundle["id"], "target": {"all": True}}  # uploaded before the revoking
        refused = await admin.post("/api/rollouts", json=stale)
        assert refused.status_code == 422
        assert refused.json()["detail"][0]["msg"].startswith("revoked_key")

        assert (await admin.delete(f"/api/bundles/{bundle['id']}")).status_code == 204
        assert not path.exists()
        assert (await admin.get(f"/api/bundles/{bundle['id']}")).status_code == 404

        audit = (await admin.get("/api/audit")).json()["entries"]
        actions = {entry["action"] for entry in audit}
        assert {
            "bundle.key.added",
            "bundle.uploaded",
            "bundle.key.revoked",
            "bundle.deleted",
        } <= actions


async def test_a_key_past_its_expiry_signs_nothing_and_one_expiring_later_works(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    lasting, expired = SigningKey.generate(), SigningKey.generate()
    now = now_ms()
    async with api_client(hub) as admin:
        bad = {"name": "k", "public_key": lasting.public.to_text(), "expires_at": -1}
        refused = await admin.post("/api/bundle-keys", json=bad)
        assert refused.status_code == 422
        assert refused.json()["detail"][0]["loc"] == ["body", "expires_at"]
        in_an_hour = {"name": "lasting", "public_key": lasting.public.to_text()}
        added = await admin.post("/api/bundle-keys", json=in_an_hour | {"expires_at": now + HOUR})
        assert added.json()["expires_at"] == now + HOUR
        past = {"name": "old", "public_key": expired.public.to_text(), "expires_at": now - 1}
        assert (await admin.post("/api/bundle-keys", json=past)).status_code == 201

        answer = await admin.post("/api/bundles", content=signed(expired))
        assert answer.status_code == 422
        assert answer.json()["detail"][0]["msg"].startswith("key_expired"), answer.text
        assert hub.bundles.refusals == {"key_expired": 1}
        uploaded = await admin.post("/api/bundles", content=signed(lasting))
        assert uploaded.status_code == 201, uploaded.text

        # Two hours on, the key that signed it has expired: no rollout sends the bundle.
        monkeypatch.setattr("fieldhub.hub.rollouts.bundles.now_ms", lambda: now + 2 * HOUR)
        stale = {"bundle": uploaded.json()["id"], "target": {"all": True}}
        late = await admin.post("/api/rollouts", json=stale)
        assert late.status_code == 422
        assert late.json()["detail"][0]["msg"].startswith("key_expired"), late.text
        metrics = (await admin.get("/metrics")).text
        assert 'fieldhub_bundle_refusals_total{reason="key_expired",what="upload"} 2.0' in metrics


async def test_a_bundle_over_the_limit_is_refused_at_the_edge(make_hub: HubFactory) -> None:
    async with make_hub(bundle_max_bytes=4096) as hub, api_client(hub) as admin:
        answer = await admin.post("/api/bundles", content=b"x" * 5000)
        assert answer.status_code == 413
        assert "at most 4096 bytes" in answer.text


async def test_a_device_downloads_with_its_token_and_resumes_with_range(hub: Hub) -> None:
    key = SigningKey.generate()
    data = signed(key)
    async with api_client(hub) as admin, api_client(hub, None) as device:
        await admin.post("/api/bundle-keys", json={"name": "k", "public_key": key.public.to_text()})
        bundle_id = (await admin.post("/api/bundles", content=data)).json()["id"]
        url = hub.rollouts.links.url("atm-1", bundle_id, 60_000)
        assert len(url) <= 256  # a str argument of bundle.install (protocol/actions.py)
        path = url.split("://", 1)[1].split("/", 1)[1]

        whole = await device.get(f"/{path}")
        assert whole.status_code == 200
        assert whole.content == data
        assert whole.headers["content-length"] == str(len(data))
        part = await device.get(f"/{path}", headers={"Range": "bytes=100-"})
        assert part.status_code == 206
        assert part.content == data[100:]

        token = path.split("token=")[1]
        forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
        assert (
            await device.get(f"/api/bundles/{bundle_id}/download?token={forged}")
        ).status_code == 404
        other = "0" * 64
        assert (await device.get(f"/api/bundles/{other}/download?token={token}")).status_code == 404
        expired = hub.rollouts.links.url("atm-1", bundle_id, -1).split("token=")[1]
        assert (
            await device.get(f"/api/bundles/{bundle_id}/download?token={expired}")
        ).status_code == 410
        assert (await device.get(f"/api/bundles/{bundle_id}/download")).status_code == 422
        assert hub.rollouts.links.refusals == {"forged": 2, "expired": 1}
        metrics = (await admin.get("/metrics")).text  # what an operator scrapes
        assert 'fieldhub_bundle_refusals_total{reason="forged",what="download"} 2.0' in metrics
        assert 'fieldhub_bundle_refusals_total{reason="expired",what="download"} 1.0' in metrics


async def test_download_tokens_never_reach_the_access_log(
    hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    create_app(hub)  # installs the access log's filter
    access = logging.getLogger("uvicorn.access")
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        access.info(
            '%s - "%s %s HTTP/%s" %d',
            "10.0.0.1",
            "GET",
            "/api/bundles/ab/download?token=SECRET.x",
            "1.1",
            200,
        )
    assert "SECRET" not in caplog.text
    assert "token=<token>" in caplog.text
