"""Provisioning by claim, end to end over REST and real MQTT: an operator makes a claim token,
a device claims with it and waits, the operator approves, the device fetches its credentials
once and connects with them; pre-authorized ids skip the wait; spent, expired and revoked
tokens admit nobody; operators act only within their sites."""

from __future__ import annotations

import asyncio

import pytest

from fieldhub.clock import now_ms
from fieldhub.hub.app import Hub
from tests.conftest import DeviceFactory, api_client
from tests.device_client import TestDevice


async def _claim_token(hub: Hub, **body: object) -> dict[str, object]:
    async with api_client(hub, "operator", sites=["berlin"]) as operator:
        response = await operator.post(
            "/api/claim-tokens",
            json={"name": "berlin installers", "labels": {"site": "berlin"}, **body},
        )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_claim_approve_fetch_once_and_connect(any_hub: Hub, uid: str):
    hub = any_hub
    token = (await _claim_token(hub, uses=1))["token"]
    device_id = f"atm-{uid}"

    async with (
        api_client(hub, None) as device,
        api_client(hub, "operator", sites=["berlin"]) as operator,
    ):
        claim = await device.post(
            "/api/provisioning/claims",
            json={"token": token, "device_id": device_id, "info": {"model": "pi3b+"}},
        )
        assert claim.status_code == 201, claim.text
        assert claim.json()["status"] == "pending"
        poll = {"poll_secret": claim.json()["poll_secret"]}
        credentials_url = f"/api/provisioning/claims/{device_id}/credentials"

        waiting = await device.post(credentials_url, json=poll)
        assert (waiting.status_code, waiting.json()["status"]) == (202, "pending")
        guessed = await device.post(credentials_url, json={"poll_secret": "fhpoll_guess"})
        assert guessed.status_code == 404
        # The device is not registered while it waits: no data is accepted from it yet.
        assert (await operator.get(f"/api/devices/{device_id}")).status_code == 404

        pending = (await operator.get("/api/claims", params={"status": "pending"})).json()
        assert [(c["device_id"], c["info"]) for c in pending] == [(device_id, {"model": "pi3b+"})]
        approved = await operator.post(f"/api/claims/{device_id}/approve")
        assert approved.status_code == 200, approved.text
        assert approved.json()["status"] == "approved"

        delivered = await device.post(credentials_url, json=poll)
        assert delivered.status_code == 200, delivered.text
        credentials = delivered.json()["credentials"]
        assert credentials["client_id"] == device_id
        again = await device.post(credentials_url, json=poll)
        assert again.status_code == 410  # never handed out twice

        registered = (await operator.get(f"/api/devices/{device_id}")).json()
        assert registered["labels"] == {"site": "berlin"}

    mqtt_device = await TestDevice.connect(
        hub.broker_url,
        device_id,
        username=credentials["username"],
        password=credentials["secret"],
    )
    try:
        mqtt_device.telemetry(1, temperature=21.5)
        await mqtt_device.wait_acked(1)
    finally:
        mqtt_device.close()

    actions = [e.action for e in (await hub.audit.query(target=device_id)).entries]
    for action in ("device.claim", "device.claim.approved", "device.credentials.delivered"):
        assert action in actions


async def test_pre_authorized_ids_are_approved_at_once(hub: Hub, uid: str):
    device_id = f"pre-{uid}"
    token = (await _claim_token(hub, uses=5, auto_approve=[device_id]))["token"]
    async with api_client(hub, None) as device:
        claim = await device.post(
            "/api/provisioning/claims", json={"token": token, "device_id": device_id}
        )
        assert claim.json()["status"] == "approved"
        delivered = await device.post(
            f"/api/provisioning/claims/{device_id}/credentials",
            json={"poll_secret": claim.json()["poll_secret"]},
        )
        assert delivered.status_code == 200
        # Another id with the same token still waits for a person.
        other = await device.post(
            "/api/provisioning/claims", json={"token": token, "device_id": f"other-{uid}"}
        )
        assert other.json()["status"] == "pending"


async def test_spent_expired_revoked_and_forged_tokens_admit_nobody(hub: Hub, uid: str):
    spent = (await _claim_token(hub, uses=1))["token"]
    revoked = await _claim_token(hub, uses=5)
    async with api_client(hub, "admin") as admin:
        assert (await admin.delete(f"/api/claim-tokens/{revoked['id']}")).status_code == 204
    _, expired = await hub.provisioning.create_token(
        name="old", labels={"site": "berlin"}, uses=5, expires_at=now_ms() - 1, created_by="test"
    )
    fresh = (await _claim_token(hub, uses=5))["token"]

    async with api_client(hub, None) as device:

        async def claim(token: object, device_id: str) -> int:
            response = await device.post(
                "/api/provisioning/claims", json={"token": token, "device_id": device_id}
            )
            return response.status_code

        assert await claim(spent, f"first-{uid}") == 201
        assert await claim(spent, f"replay-{uid}") == 401  # its one use is spent
        assert await claim(revoked["token"], f"revoked-{uid}") == 401
        assert await claim(expired, f"late-{uid}") == 401
        assert await claim("fhclaim_" + "x" * 43, f"forged-{uid}") == 401
        assert await claim(fresh, f"first-{uid}") == 409  # claimed already
        assert await claim(fresh, "no/slash") == 422

    denied = (await hub.audit.query(action="device.claim", outcome="denied")).entries
    assert {e.target for e in denied} >= {f"replay-{uid}", f"late-{uid}", f"forged-{uid}"}
    assert all("fhclaim_" not in str(e.detail) for e in denied)  # no token in the audit log
    assert len(await hub.provisioning.claims()) == 1  # only the first got anywhere


async def test_operators_decide_only_claims_of_their_sites(hub: Hub, uid: str):
    async with api_client(hub, "admin") as admin:
        made = await admin.post(
            "/api/claim-tokens", json={"name": "hamburg", "labels": {"site": "hamburg"}}
        )
        token = made.json()["token"]
    async with api_client(hub, None) as device:
        await device.post(
            "/api/provisioning/claims", json={"token": token, "device_id": f"hh-{uid}"}
        )
    async with api_client(hub, "operator", sites=["berlin"]) as operator:
        assert (await operator.get("/api/claims")).json() == []
        response = await operator.post(f"/api/claims/hh-{uid}/approve")
        assert response.status_code == 404
        made = await operator.post(
            "/api/claim-tokens", json={"name": "sneaky", "labels": {"site": "hamburg"}}
        )
        assert made.status_code == 403
    async with api_client(hub, "viewer", sites=["hamburg"]) as viewer:
        assert [c["device_id"] for c in (await viewer.get("/api/claims")).json()] == [f"hh-{uid}"]
        assert (await viewer.post(f"/api/claims/hh-{uid}/reject")).status_code == 403


async def test_a_rejected_device_gets_nothing(hub: Hub, uid: str):
    token = (await _claim_token(hub))["token"]
    async with (
        api_client(hub, None) as device,
        api_client(hub, "operator", sites=["berlin"]) as operator,
    ):
        claim = await device.post(
            "/api/provisioning/claims", json={"token": token, "device_id": f"rogue-{uid}"}
        )
        rejected = await operator.post(f"/api/claims/rogue-{uid}/reject")
        assert rejected.json()["status"] == "rejected"
        assert (await operator.post(f"/api/claims/rogue-{uid}/approve")).status_code == 409
        poll = await device.post(
            f"/api/provisioning/claims/rogue-{uid}/credentials",
            json={"poll_secret": claim.json()["poll_secret"]},
        )
        assert poll.status_code == 403
        assert (await operator.get(f"/api/devices/rogue-{uid}")).status_code == 404


@pytest.mark.parametrize("racers", [6])
async def test_concurrent_polls_deliver_credentials_once(hub: Hub, uid: str, racers: int):
    device_id = f"race-{uid}"
    token = (await _claim_token(hub, auto_approve=[device_id]))["token"]
    async with api_client(hub, None) as device:
        claim = await device.post(
            "/api/provisioning/claims", json={"token": token, "device_id": device_id}
        )
        poll = {"poll_secret": claim.json()["poll_secret"]}
        answers = await asyncio.gather(
            *(
                device.post(f"/api/provisioning/claims/{device_id}/credentials", json=poll)
                for _ in range(racers)
            )
        )
    assert sorted(a.status_code for a in answers) == [200] + [410] * (racers - 1)
    assert len(await hub.credentials.usernames(device_id)) == 1


async def test_operators_rotate_and_revoke_credentials_over_rest(
    hub: Hub, connect_device: DeviceFactory
):
    device = await connect_device(hub, "rot", site="berlin")
    device.close()  # the device will come back with its new key
    async with api_client(hub, "operator", sites=["berlin"]) as operator:
        rotated = await operator.post(
            f"/api/devices/{device.device_id}/credentials", json={"grace_s": 600}
        )
        assert rotated.status_code == 201, rotated.text
        new = rotated.json()
        assert new["client_id"] == device.device_id
        renewed = await TestDevice.connect(
            hub.broker_url, device.device_id, username=new["username"], password=new["secret"]
        )
        try:
            renewed.telemetry(1, t=1.0)
            await renewed.wait_acked(1)

            revoked = await operator.delete(f"/api/devices/{device.device_id}/credentials")
            assert revoked.status_code == 204
            await renewed.wait_disconnected()
        finally:
            renewed.close()
        with pytest.raises(ConnectionRefusedError):
            await TestDevice.connect(
                hub.broker_url, device.device_id, username=new["username"], password=new["secret"]
            )
        # Revocation ends the keys, not the device: registration and data stay.
        assert (await operator.get(f"/api/devices/{device.device_id}")).status_code == 200
    actions = {e.action for e in (await hub.audit.query(target=device.device_id)).entries}
    assert {"device.credentials.rotated", "device.credentials.revoked"} <= actions
