"""Signed bundles on the device: install, trial, confirm or roll back (docs/bundles.md).

``host`` (the agent's side, across restarts), ``install`` (judge in memory, then write and
switch), ``download``, ``checks`` (what only the device can judge), ``installed`` (the active
area), ``journal`` (each step on disk, and the tests' crash points).

This module itself is what every agent imports: whether bundles are in use at all
(:func:`in_use`), and the ``software`` it reports. An agent that trusts no key and has nothing
installed never imports the rest (its memory budget, docs/agent.md "Memory"): it offers no
``bundle.*`` actions, so the hub counts a rollout to it as unsupported before sending anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from fieldhub import __version__

if TYPE_CHECKING:
    from fieldhub.agent.config import AgentConfig

__all__ = ["SOFTWARE_KEY", "in_use", "software_state"]

SOFTWARE_KEY: Final = "software"
"""Reported-state key: ``{"agent_version": ..., "bundles": {name: version}}``."""


def in_use(config: AgentConfig) -> bool:
    """Whether this agent runs the bundle host: it trusts a key, or its bundles folder exists
    (a version installed, or an install to finish, from when it trusted one)."""
    return bool(config.bundles.trusted_keys) or config.bundles_dir.exists()


def software_state(bundles: Mapping[str, str]) -> dict[str, Any]:
    """What this device runs, for the reported state: the agent's version and the running
    bundles' versions by name."""
    return {"agent_version": __version__, "bundles": dict(bundles)}
