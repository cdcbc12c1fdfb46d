"""The README's example bundles (``examples/bundles``), signed with the demo's key in memory,
as ``fieldhub bundle build`` and ``sign`` make them: for tests and benchmarks that roll them
out to the demo's agents without running the command line."""

from __future__ import annotations

from pathlib import Path

import yaml

from fieldhub.bundles import make_bundle, read_payload
from fieldhub.cli.demo_bundles import demo_signing_key
from fieldhub.cli.demo_fleet import DEVICE_TYPE

EXAMPLES = Path(__file__).resolve().parent.parent.parent / "examples" / "bundles"


def example_bundle(data: Path, folder: str, version: str, health: str) -> bytes:
    """``examples/bundles/<folder>`` as ``hello`` ``version`` for the demo's devices, its
    health check ``health``, signed with the demo key of the data folder ``data``."""
    source = EXAMPLES / folder
    actions = yaml.safe_load((source / "actions.yaml").read_text(encoding="utf-8"))
    return make_bundle(
        read_payload(source),
        demo_signing_key(data),
        name="hello",
        version=version,
        target={"device_types": [DEVICE_TYPE], "labels": {}},
        actions=actions,
        health={"action": health, "timeout_s": 60},
    )
