"""``fieldhub rules apply``: rules from a YAML file, checked like the API checks them, taken
by a running hub within seconds."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from fieldhub.hub.app import Hub
from tests.conftest import HubFactory
from tests.waiting import eventually

FIELDHUB = [sys.executable, "-m", "fieldhub"]
RULES = """
rules:
  - id: over-temp
    name: Cabinet too hot
    severity: major
    target: {labels: {site: berlin}}
    condition: {kind: threshold, key: temperature, direction: above, raise: 50, clear: 45}
    for_s: 60
  - id: offline
    severity: critical
    condition: {kind: presence, presence: offline}
"""


async def fieldhub(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [*FIELDHUB, *args, "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_rules_apply_creates_then_replaces_and_the_running_hub_takes_them(
    make_hub: HubFactory, tmp_path: Path
):
    data = tmp_path / "data"
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    async with make_hub(data=data) as hub:
        applied = await fieldhub(data, "rules", "apply", str(rules))
        assert applied.returncode == 0, applied.stderr
        assert "rule 'over-temp' created" in applied.stderr + applied.stdout
        await eventually(lambda: "offline" in hub.alarms.engine.index.rules, "the hub's rules")
        rules.write_text(RULES.replace("raise: 50", "raise: 70"))
        again = await fieldhub(data, "rules", "apply", str(rules))
        assert "rule 'over-temp' replaced" in again.stderr + again.stdout

        def raised_at_70(running: Hub = hub) -> bool:
            rule = running.alarms.engine.index.rules.get("over-temp")
            return rule is not None and rule.condition.to_dict()["raise"] == 70

        await eventually(raised_at_70, "the replaced rule")
        entries = (await hub.audit.query(target="over-temp")).entries
        assert [e.action for e in entries] == ["alarm_rule.changed", "alarm_rule.created"]
        assert entries[0].actor.startswith("cli:")


async def test_a_bad_rule_stops_the_whole_file_naming_it(tmp_path: Path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.replace("clear: 45", "clear: 55"))
    refused = await fieldhub(tmp_path / "data", "rules", "apply", str(rules))
    assert refused.returncode == 1
    message = " ".join((refused.stderr + refused.stdout).split())
    assert "rules[0] (id 'over-temp'): condition.clear: condition.clear 55" in message
    assert "rule 'offline'" not in message  # nothing of the file was written
