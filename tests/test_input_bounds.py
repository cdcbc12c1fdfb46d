"""Input at every edge is bounded, refused with a clear answer, and never turns into a 500.

- Free-form JSON nests at most 32 levels (``protocol/nesting.py``): deeper input is a 422 on
  the API and a counted, reported reject over MQTT; a value stored deeper before the limit
  existed is clipped on reading, and the list it is part of still answers.
- Every integer parameter and body field has bounds a 64-bit database column can hold.
- Every 422 has the shape the OpenAPI document promises: a list of ``{loc, msg, type}``.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from fieldhub.clock import now_ms
from fieldhub.hub.app import Hub
from fieldhub.hub.ingest.pipeline import IngestSettings
from fieldhub.hub.store import schema
from fieldhub.protocol import MAX_NESTING, Channel, PayloadError, decode
from fieldhub.protocol.nesting import CLIPPED
from tests.conftest import DeviceFactory, HubFactory, api_client
from tests.hub_client import served
from tests.test_live import live, token_of


def nested(levels: int, leaf: Any = 1) -> Any:
    """A JSON object ``levels`` deep: ``{"a": {"a": ... leaf}}``."""
    value = leaf
    for _ in range(levels):
        value = {"a": value}
    return value


def nested_json(levels: int) -> str:
    """:func:`nested` as JSON text, built without recursing (for depths json.dumps refuses)."""
    return '{"a":' * levels + "1" + "}" * levels


def depth(value: Any) -> int:
    """How many levels of objects and arrays ``value`` has."""
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


def assert_422_list(response: httpx.Response, field: str) -> list[dict[str, Any]]:
    """The answer is a 422 in the documented shape, with an error located at ``field``."""
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert isinstance(errors, list)
    assert all({"loc", "msg", "type"} <= set(error) for error in errors), errors
    assert any(error["loc"][-1] == field for error in errors), errors
    return errors


# -- nesting: the API refuses it ------------------------------------------------------------


async def test_attributes_nested_too_deep_are_refused_and_the_device_list_keeps_working(
    api: httpx.AsyncClient, uid: str
):
    deep = {"x": nested(300)}
    answer = await api.post("/api/devices", json={"id": f"deep-{uid}", "attributes": deep})
    errors = assert_422_list(answer, "attributes")
    assert f"deeper than {MAX_NESTING} levels" in errors[0]["msg"]
    assert (await api.get("/api/devices")).status_code == 200

    at_limit = {"x": nested(MAX_NESTING - 1)}  # 32 levels counted from `attributes` itself
    answer = await api.post("/api/devices", json={"id": f"ok-{uid}", "attributes": at_limit})
    assert answer.status_code == 201, answer.text
    patch = await api.patch(f"/api/devices/ok-{uid}", json={"attributes": {"y": nested(40)}})
    assert_422_list(patch, "attributes")
    listed = (await api.get("/api/devices")).json()
    assert [d["attributes"] for d in listed if d["id"] == f"ok-{uid}"] == [at_limit]


async def test_other_free_form_bodies_are_refused_when_nested_too_deep(
    hub: Hub, api: httpx.AsyncClient, uid: str
):
    device_id = f"dev-{uid}"
    await hub.devices.create(device_id)
    too_deep = {"x": nested(MAX_NESTING)}
    command = await api.post(
        f"/api/devices/{device_id}/commands",
        params={"wait": "false"},
        json={"action": "relay.set", "args": too_deep},
    )
    assert_422_list(command, "args")
    desired = await api.patch(
        f"/api/devices/{device_id}/state", json={"version": 0, "desired": too_deep}
    )
    assert_422_list(desired, "desired")
    _, token = await hub.provisioning.create_token(
        name="t", labels={}, uses=1, expires_at=now_ms() + 60_000, created_by="test"
    )
    async with api_client(hub, role=None) as device:
        claim = await device.post(
            "/api/provisioning/claims",
            json={"token": token, "device_id": f"new-{uid}", "info": too_deep},
        )
    assert_422_list(claim, "info")


# -- nesting: values stored deeper before the limit are clipped, not a 500 -----------------


async def test_values_stored_too_deep_are_clipped_on_reading(
    hub: Hub, api: httpx.AsyncClient, uid: str
):
    # As in a database written before the limit existed: set beneath the API.
    deep, fine = f"deep-{uid}", f"fine-{uid}"
    await hub.devices.create(deep, attributes={"x": nested(300)})
    await hub.devices.create(fine, attributes={"model": "A1"})
    async with hub.engine.begin() as conn:
        await conn.execute(
            sa.update(schema.devices)
            .where(schema.devices.c.id == deep)
            .values(reported={"config": nested(300)}, reported_ts=now_ms())
        )
        await conn.execute(
            sa.insert(schema.events).values(
                device_id=deep,
                seq=None,
                ts=now_ms(),
                received_at=now_ms(),
                type="legacy",
                severity="info",
                message="",
                data={"x": nested(300)},
            )
        )
        await conn.execute(
            sa.insert(schema.commands).values(
                id=f"c-{uid}",
                device_id=deep,
                hub="an-older-hub",
                action="config.set",
                args={"x": nested(300)},
                status="succeeded",
                created_by="test",
                created_at=now_ms(),
                expires_at=now_ms(),
                timeout_ms=1000,
                deliveries=1,
                result=nested(300),
                error="",
            )
        )
    _, token = await hub.provisioning.create_token(
        name="t", labels={}, uses=1, expires_at=now_ms() + 60_000, created_by="test"
    )
    await hub.provisioning.claim(token, f"claimed-{uid}", {"x": nested(300)})

    listed = await api.get("/api/devices")
    assert listed.status_code == 200, listed.text
    by_id = {d["id"]: d for d in listed.json()}
    assert by_id[fine]["attributes"] == {"model": "A1"}
    clipped = by_id[deep]["attributes"]
    assert depth(clipped) == MAX_NESTING
    assert nested(MAX_NESTING - 1, CLIPPED) == clipped["x"]

    state = await api.get(f"/api/devices/{deep}/state")
    assert state.status_code == 200, state.text
    assert depth(state.json()["reported"]) == MAX_NESTING
    events = await api.get("/api/events", params={"device": deep})
    assert events.status_code == 200, events.text
    assert depth(events.json()["events"][0]["data"]) == MAX_NESTING
    commands = await api.get(f"/api/devices/{deep}/commands")
    assert commands.status_code == 200, commands.text
    [command] = commands.json()
    assert depth(command["args"]) == depth(command["result"]) == MAX_NESTING
    claims = await api.get("/api/claims")
    assert claims.status_code == 200, claims.text
    [claim] = [c for c in claims.json() if c["device_id"] == f"claimed-{uid}"]
    assert depth(claim["info"]) == MAX_NESTING


# -- nesting over MQTT: a counted, reported reject --------------------------------------------


@pytest.mark.parametrize(
    "broker", ["embedded", pytest.param("mosquitto", marks=pytest.mark.mosquitto)]
)
async def test_mqtt_messages_nested_too_deep_are_rejected_counted_and_reported(
    make_hub: HubFactory, connect_device: DeviceFactory, broker: str
):
    ingest = IngestSettings(reject_replies_per_s=1e9)  # every reject reported, not 1/s
    async with make_hub(broker=broker, ingest=ingest) as hub:
        device = await connect_device(hub, "deep")
        ts = now_ms()
        too_deep = [
            # just over the limit: refused by the schema
            f'{{"seq": 1, "ts": {ts}, "type": "x", "data": {{"x": {nested_json(MAX_NESTING)}}}}}',
            # so deep the parser gives up (RecursionError): a reject all the same
            f'{{"seq": 1, "ts": {ts}, "type": "x", "data": {{"x": {nested_json(1000)}}}}}',
            f'{{"seq": 1, "ts": {ts}, "state": {{"x": {nested_json(1000)}}}}}',
        ]
        channels = [Channel.EVENT, Channel.EVENT, Channel.STATE]
        for channel, payload in zip(channels, too_deep, strict=True):
            device.publish_raw(channel, payload.encode())
        await device.wait_rejects(3, within_s=5)
        assert all("deeper than 32 levels" in r.error for r in device.rejects), device.rejects
        device.telemetry(1, ts=ts, t=1.0)  # ... and the hub goes on storing good data
        await device.wait_acked(1)

        assert hub.stats.rejected["invalid_payload"] == 3
        assert hub.stats.events_stored == 0
        async with api_client(hub) as api:
            metrics = (await api.get("/metrics")).text
            assert 'rejected_total{reason="invalid_payload"} 3.0' in metrics
            events = (await api.get("/api/events")).json()["events"]
            assert [e for e in events if e["type"] == "x"] == []  # presence events only
            state = (await api.get(f"/api/devices/{device.device_id}/state")).json()
            assert "x" not in state["reported"]


async def test_a_live_request_nested_too_deep_gets_an_error_and_the_connection_stays(hub: Hub):
    deep = '{"op": "ping", "x": ' + nested_json(5000) + "}"  # far within the 64 kB request size
    async with served(hub) as base, live(base, token=await token_of(hub)) as client:
        await client.send(deep)
        assert "bad request" in (await client.next("error"))["message"]
        await client.send({"op": "ping"})
        assert await client.next("pong") == {"type": "pong"}


@pytest.mark.parametrize(
    ("channel", "template"),
    [
        (Channel.EVENT, '{"seq": 1, "ts": 1, "type": "x", "data": {"x": DEEP}}'),
        (Channel.STATE, '{"seq": 1, "ts": 1, "state": {"x": DEEP}}'),
        (Channel.REPLY, '{"id": "c1", "ok": true, "ts": 1, "result": {"x": DEEP}}'),
        # what a device (the agent) decodes from the hub
        (Channel.CMD, '{"id":"c", "action":"a", "expires":1, "reply":"r", "args":{"x": DEEP}}'),
        (Channel.DESIRED, '{"version": 1, "state": {"x": DEEP}}'),
    ],
)
@pytest.mark.parametrize("levels", [MAX_NESTING, 5000])
def test_every_free_form_field_of_the_contract_has_the_nesting_limit(
    channel: Channel, template: str, levels: int
):
    ok = template.replace("DEEP", nested_json(MAX_NESTING - 1)).encode()
    decode(channel, ok)  # 32 levels counted from the field itself
    with pytest.raises(PayloadError, match="deeper than 32 levels"):
        decode(channel, template.replace("DEEP", nested_json(levels)).encode())


# -- integers: every one bounded at the edge -------------------------------------------------

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
JSON = "application/json"


def _integers(schema: Any, components: dict[str, Any], seen: set[str]) -> list[dict[str, Any]]:
    """Every integer schema inside ``schema`` (through $ref, anyOf, items, properties...)."""
    if isinstance(schema, list):
        return [found for item in schema for found in _integers(item, components, seen)]
    if not isinstance(schema, dict):
        return []
    ref = schema.get("$ref")
    if ref is not None:
        name = ref.rsplit("/", 1)[-1]
        if name in seen:
            return []
        return _integers(components[name], components, seen | {name})
    found = [schema] if schema.get("type") == "integer" else []
    for key in ("anyOf", "oneOf", "allOf", "items", "prefixItems", "additionalProperties"):
        found += _integers(schema.get(key), components, seen)
    for child in (schema.get("properties") or {}).values():
        found += _integers(child, components, seen)
    return found


async def test_every_integer_parameter_and_body_field_is_bounded(api: httpx.AsyncClient):
    spec = (await api.get("/openapi.json")).json()
    components = spec["components"]["schemas"]
    unbounded = []
    checked = 0
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            inputs = [(p["name"], p["schema"]) for p in operation.get("parameters", [])]
            body = operation.get("requestBody", {}).get("content", {})
            inputs += [("body", media["schema"]) for media in body.values()]
            for name, given in inputs:
                for integer in _integers(given, components, set()):
                    checked += 1
                    low, high = integer.get("minimum"), integer.get("maximum")
                    if low is None or high is None or low < INT64_MIN or high > INT64_MAX:
                        unbounded.append(f"{method.upper()} {path} {name}: {integer}")
    assert checked > 20  # the walk found the integers (limits, ids, times, versions...)
    assert unbounded == []


async def test_integers_beyond_64_bits_are_a_422_not_a_500(hub: Hub, api: httpx.AsyncClient):
    huge = str(2**63)
    device_id = "dev-" + huge[-6:]
    await hub.devices.create(device_id)
    for url, params in [
        ("/api/events", {"end": huge}),
        ("/api/events", {"start": huge}),
        ("/api/audit", {"start": huge}),
        (f"/api/devices/{device_id}/telemetry", {"end": huge}),
        (f"/api/devices/{device_id}/commands", {"before": huge}),
        ("/api/devices", {"offset": huge}),
        (f"/api/users/{huge}", {}),
        (f"/api/users/1/tokens/{huge}", {}),
    ]:
        method = "DELETE" if "tokens/" in url else "GET"
        answer = await api.request(method, url, params=params)
        field = next(iter(params), url.rsplit("/", 2)[-2].rstrip("s") + "_id")
        assert_422_list(answer, field)
    for url in (f"/api/tokens/{huge}", f"/api/claim-tokens/{huge}"):
        assert_422_list(await api.delete(url), "token_id")
    desired = await api.patch(
        f"/api/devices/{device_id}/state", json={"version": 2**63, "desired": {"a": 1}}
    )
    assert_422_list(desired, "version")


# -- 422 answers as documented, and refusals that say what is wrong ---------------------------


async def test_every_422_has_the_documented_list_shape(hub: Hub, api: httpx.AsyncClient):
    spec = (await api.get("/openapi.json")).json()
    documented = {
        op["responses"]["422"]["content"]["application/json"]["schema"]["$ref"]
        for ops in spec["paths"].values()
        for op in ops.values()
        if "422" in op["responses"]
    }
    assert documented == {"#/components/schemas/HTTPValidationError"}
    device_id = "dev-422"
    await hub.devices.create(device_id)
    history = f"/api/devices/{device_id}/telemetry"
    # Refusals of the routes' own (not of the schema): each was a plain string before.
    assert_422_list(await api.get(history, params={"bucket": "soon"}), "bucket")
    for answer, where in [
        (await api.get("/api/devices", params={"label": "no-equals-sign"}), ["query", "label"]),
        (await api.get(history, params={"start": 10, "end": 5}), ["query", "start"]),
        (
            await api.get(history, params={"start": 0, "end": 10**12, "bucket": "1ms"}),
            ["query", "bucket"],
        ),
        (
            await api.post("/api/commands", json={"action": "x", "labels": {"site": "nowhere"}}),
            ["body"],
        ),
    ]:
        assert answer.status_code == 422, answer.text
        [error] = answer.json()["detail"]
        assert error["loc"] == where, error
        assert error["type"] == "value_error", error
        assert error["msg"], error


async def test_a_body_without_a_json_content_type_is_told_so(api: httpx.AsyncClient):
    body = b'{"id": "plain-text"}'
    for headers in ({}, {"Content-Type": "text/plain"}):
        answer = await api.post("/api/devices", content=body, headers=headers)
        [error] = assert_422_list(answer, "body")
        assert "expected Content-Type: application/json" in error["msg"], error
    answer = await api.post("/api/devices", content=body, headers={"Content-Type": JSON})
    assert answer.status_code == 201, answer.text


async def test_a_token_without_a_scope_is_told_which_scope_it_lacks(hub: Hub):
    async with api_client(hub, "admin", scopes=["read"]) as reader:
        answer = await reader.get("/metrics")
    assert answer.status_code == 403
    assert "'metrics' scope" in answer.json()["detail"]
    async with api_client(hub, "viewer") as viewer:
        answer = await viewer.get("/api/users")
    assert answer.status_code == 403
    assert "role viewer" in answer.json()["detail"]


async def test_cursors_are_validated(api: httpx.AsyncClient, uid: str):
    for url, cursor in [
        ("/api/events", "-1:-1"),
        ("/api/events", "1:99999999999999999999"),
        ("/api/events", "1"),
        ("/api/audit", "-1"),
        ("/api/audit", "99999999999999999999"),
    ]:
        assert_422_list(await api.get(url, params={"cursor": cursor}), "cursor")
    for name in ("a", "b"):  # two entries in the audit log
        assert (await api.post("/api/devices", json={"id": f"{name}-{uid}"})).status_code == 201
    cursor = (await api.get("/api/audit", params={"limit": 1})).json()["next_cursor"]
    assert cursor is not None
    assert (await api.get("/api/audit", params={"cursor": cursor})).status_code == 200
