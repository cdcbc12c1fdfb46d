"""``GET /api/alarms/summary``: the open alarms a caller may see, counted for the dashboard's
badges (in total, by severity, per device with its highest severity; shelved ones apart)."""

from __future__ import annotations

from fieldhub.clock import now_ms
from fieldhub.hub.alarms import AlarmFilter
from fieldhub.hub.app import Hub
from fieldhub.hub.ingest.batch import Batch
from fieldhub.protocol import Telemetry
from tests.conftest import api_client
from tests.test_alarms_api import HOT, door_alarm


async def test_open_alarms_are_counted_by_site_severity_and_device(hub: Hub) -> None:
    mine, door = await door_alarm(hub, "berlin")  # warning (the default severity)
    await door_alarm(hub, "paris")
    _, shelved = await door_alarm(hub, "berlin")
    hot = {"id": "hot", "severity": "critical", "target": {"devices": [mine]}, "condition": HOT}
    await hub.alarms.put_rule(hot, actor="test", create=True)
    telemetry = Telemetry(seq=1, ts=now_ms(), values={"temp": 80})
    hub.alarms.engine.committed(Batch(telemetry=[(mine, telemetry)]))
    await hub.alarms.engine.evaluate()
    [hot_alarm] = await hub.alarms.find(AlarmFilter(rule="hot"))
    back = now_ms() + 60_000
    await hub.alarms.shelve(shelved, until=back, actor="test")
    async with api_client(hub, "viewer", sites=["berlin"]) as api:
        answer = await api.get("/api/alarms/summary")
        assert answer.status_code == 200, answer.text
        summary = answer.json()
    assert (summary["open"], summary["shelved"], summary["shelved_until"]) == (2, 1, back)
    assert summary["by_severity"] == {"critical": 1, "warning": 1}
    assert summary["devices"][mine] == {"open": 2, "severity": "critical", "shelved": 0}
    assert len(summary["devices"]) == 2  # the other berlin device, its one alarm shelved
    assert [c["open"] for d, c in summary["devices"].items() if d != mine] == [0]

    await hub.alarms.clear(door, actor="test")
    await hub.alarms.acknowledge(hot_alarm.id, actor="test")  # acknowledged is still open
    async with api_client(hub) as api:
        everyone = (await api.get("/api/alarms/summary")).json()
    assert (everyone["open"], everyone["by_severity"]) == (2, {"critical": 1, "warning": 1})
    assert everyone["shelved_until"] == back
    assert everyone["devices"][mine] == {"open": 1, "severity": "critical", "shelved": 0}
