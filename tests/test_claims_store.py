"""Claim tokens and claims in the store, on both databases: a token admits no more devices
than its uses, nothing after expiry or revocation, and credentials are delivered once."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from fieldhub.clock import now_ms
from fieldhub.hub.store.claims import (
    ClaimConflict,
    ClaimNotFound,
    ClaimStore,
    ClaimTokenInvalid,
)
from fieldhub.hub.store.database import migrate
from fieldhub.hub.store.devices import DeviceRegistry


@pytest.fixture
async def engine(empty_engine: AsyncEngine) -> AsyncEngine:
    """A migrated engine on a new database (both engines, see conftest)."""
    await migrate(empty_engine)
    return empty_engine


async def _token(store: ClaimStore, uses: int = 1, expires_in_ms: int = 60_000) -> str:
    _, token = await store.create_token(
        name="berlin installers",
        labels={"site": "berlin"},
        uses=uses,
        expires_at=now_ms() + expires_in_ms,
        created_by="user:alice",
    )
    return token


async def test_a_token_admits_as_many_devices_as_its_uses_even_when_they_race(
    engine: AsyncEngine,
):
    store = ClaimStore(engine)
    token = await _token(store, uses=3)

    results = await asyncio.gather(
        *(store.claim(token, f"atm-{n}", {}) for n in range(8)), return_exceptions=True
    )

    admitted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(admitted) == 3
    assert all(isinstance(r, ClaimTokenInvalid) for r in refused)
    assert {claim.labels["site"] for claim, _, _ in admitted} == {"berlin"}
    assert (await store.tokens())[0].uses_left == 0


async def test_expired_revoked_and_unknown_tokens_admit_nobody(engine: AsyncEngine):
    store = ClaimStore(engine)
    expired = await _token(store, expires_in_ms=-1)
    revoked = await _token(store)
    await store.revoke_token((await store.tokens())[0].id)

    for token in (expired, revoked, "not-a-token"):
        with pytest.raises(ClaimTokenInvalid):
            await store.claim(token, "atm-1", {})
    assert await store.claims() == []


async def test_a_registered_or_claimed_id_is_refused_without_spending_a_use(
    engine: AsyncEngine,
):
    store = ClaimStore(engine)
    await DeviceRegistry(engine).create("atm-1")
    token = await _token(store, uses=2)

    with pytest.raises(ClaimConflict):
        await store.claim(token, "atm-1", {})
    await store.claim(token, "atm-2", {"model": "pi3"})
    with pytest.raises(ClaimConflict):
        await store.claim(token, "atm-2", {})

    assert (await store.tokens())[0].uses_left == 1
    assert [c.device_id for c in await store.claims("pending")] == ["atm-2"]


async def test_the_poll_secret_is_checked_and_delivery_happens_once(engine: AsyncEngine):
    store = ClaimStore(engine)
    claim, _, poll_secret = await store.claim(await _token(store), "atm-1", {})
    assert claim.status == "pending"

    with pytest.raises(ClaimNotFound):
        await store.get_polled("atm-1", "guessed")
    assert (await store.get_polled("atm-1", poll_secret)).status == "pending"
    assert not await store.mark_delivered("atm-1")  # pending: nothing to deliver

    approved = await store.decide("atm-1", "approved", "user:alice")
    assert (approved.status, approved.decided_by) == ("approved", "user:alice")
    with pytest.raises(ClaimConflict):
        await store.decide("atm-1", "rejected", "user:bob")

    deliveries = await asyncio.gather(*(store.mark_delivered("atm-1") for _ in range(5)))
    assert deliveries.count(True) == 1
    assert (await store.get("atm-1")).status == "delivered"
