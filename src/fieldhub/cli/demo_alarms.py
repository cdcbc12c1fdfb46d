"""The demo's default alarm rules: installed once per data folder, never overwritten.

The rules ship as ``demo_rules.yaml`` next to this module and are read by the loader of
``fieldhub rules apply`` (``cli/rules.py``), so the file is checked exactly as a user's file
would be and doubles as the example in ``docs/alarms.md``.

Each rule is installed once: the ids installed are kept in ``DATA/demo-rules.json``. A rule a
user changed is not touched (its id is in the database already), and one a user deleted is
not put back at the next start (its id is in the file). A rule added to the shipped file in a
later version is installed at the next start.
"""

from __future__ import annotations

import asyncio
from importlib import resources
from pathlib import Path
from typing import Any, Final

import msgspec

__all__ = ["INSTALLED_FILE", "RULES_FILE", "default_rules", "install_default_rules"]

RULES_FILE: Final = "demo_rules.yaml"
INSTALLED_FILE: Final = "demo-rules.json"
ACTOR: Final = "demo"


class _Installed(msgspec.Struct, frozen=True):
    rules: list[str]


def default_rules() -> list[dict[str, Any]]:
    """The shipped rules, each checked (``load_rules`` exits naming a bad one)."""
    from fieldhub.cli.rules import load_rules

    with resources.as_file(resources.files("fieldhub.cli") / RULES_FILE) as path:
        return load_rules(path)


async def install_default_rules(hub: Any, data: Path) -> list[str]:
    """Create the default rules that were never installed in ``data`` and whose id is free.

    Args:
        hub: the running hub (``fieldhub.hub.app.Hub``).
        data: the demo's data folder (where the list of installed ids is kept).

    Returns:
        The ids created now (none on a restart).
    """
    rules = await asyncio.to_thread(default_rules)
    path = data / INSTALLED_FILE
    installed = await asyncio.to_thread(_read_installed, path)
    known = len(installed)
    taken = {row.id for row in await hub.alarms.store.rules()}
    created = []
    for raw in rules:
        rule_id = raw["id"]
        if rule_id in installed:
            continue
        if rule_id not in taken:  # else a rule of the user's own, with the same id: theirs
            await hub.alarms.put_rule(raw, actor=ACTOR, rule_id=rule_id, create=True)
            created.append(rule_id)
        installed.append(rule_id)
    if len(installed) != known:
        await asyncio.to_thread(
            path.write_bytes, msgspec.json.encode(_Installed(installed)) + b"\n"
        )
    return created


def _read_installed(path: Path) -> list[str]:
    try:
        return list(msgspec.json.decode(path.read_bytes(), type=_Installed).rules)
    except FileNotFoundError:
        return []
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        # A damaged list: installing again could bring back rules the user deleted, so
        # treat every shipped rule as installed; the rules in the database stay as they are.
        return [raw["id"] for raw in default_rules()]
