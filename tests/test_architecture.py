"""The rule of dependencies, kept by a test: imports point down, never across or up.

Each rule names who imports (a module prefix) and what it must not import. The test walks the
source with ``ast`` (no import is executed), so a forbidden arrow fails here with its file and
line, before it becomes a cycle or a layer that cannot be moved. ``docs/architecture.md`` says
why each rule exists.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


class Rule(NamedTuple):
    importer: str
    forbidden: tuple[str, ...]
    allowed: tuple[str, ...] = ()
    why: str = ""


RULES = [
    Rule(
        "fieldhub.protocol",
        ("fieldhub",),
        allowed=("fieldhub.protocol",),
        why="the wire contract is shared by every program and depends on none of them",
    ),
    Rule("fieldhub.agent", ("fieldhub.hub", "fieldhub.cli"), why="the agent ships without the hub"),
    Rule("fieldhub.hub", ("fieldhub.agent",), why="the hub never runs device code"),
    Rule(
        "fieldhub.gateway",
        ("fieldhub.hub", "fieldhub.cli"),
        why="the gateway ships without the hub (it shares the agent's outbox and sender)",
    ),
    Rule(
        "fieldhub.mqtt",
        ("fieldhub.hub", "fieldhub.agent", "fieldhub.protocol"),
        why="the MQTT client is a transport, below every program",
    ),
    Rule(
        "fieldhub.hub.api",
        ("fieldhub.hub.store",),
        why="routes use services, views and errors; the store is the services' business",
    ),
    Rule(
        "fieldhub.hub.store",
        ("fieldhub.hub",),
        allowed=("fieldhub.hub.store", "fieldhub.hub.errors", "fieldhub.hub.secrets"),
        why="the store is the bottom of the hub: services sit above it, never below",
    ),
    Rule(
        "fieldhub.bundles",
        ("fieldhub.hub", "fieldhub.agent", "fieldhub.cli"),
        why="the bundle format is shared by the signer's CLI, the hub and the agent",
    ),
    Rule(
        "fieldhub.lan",
        ("fieldhub",),
        allowed=("fieldhub.lan", "fieldhub.private_files"),
        why="the LAN protocol runs on a controller's standard library",
    ),
    Rule(
        "fieldhub.controller",
        ("fieldhub.hub", "fieldhub.gateway", "fieldhub.protocol", "fieldhub.mqtt"),
        why="a controller is a small board's program: standard library and PyYAML",
    ),
    Rule(
        "fieldhub.gateway.lan",
        ("fieldhub.hub", "fieldhub.agent", "fieldhub.controller", "fieldhub.gateway.uplink"),
        why="the LAN side meets the uplink only through gateway/ports.py",
    ),
    Rule("fieldhub", ("tests",), why="test support is never shipped in the product"),
]


class Arrow(NamedTuple):
    importer: str
    imported: str
    where: str


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, importer: str | None = None) -> Iterator[Arrow]:
    importer = importer or _module_name(path)
    package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        where = f"{path.name}:{getattr(node, 'lineno', 0)} ({importer})"
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Arrow(importer, alias.name, where)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # "from fieldhub.hub import secrets" imports the module fieldhub.hub.secrets
            for alias in node.names:
                yield Arrow(importer, f"{base}.{alias.name}", where)


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _all_arrows() -> list[Arrow]:
    return [arrow for path in sorted(SRC.rglob("*.py")) for arrow in _imports(path)]


def _broken(rule: Rule, arrows: list[Arrow]) -> list[str]:
    return [
        f"{arrow.where}: {arrow.importer} imports {arrow.imported}"
        for arrow in arrows
        if _within(arrow.importer, rule.importer)
        and any(_within(arrow.imported, f) for f in rule.forbidden)
        and not any(_within(arrow.imported, a) for a in rule.allowed)
    ]


@pytest.mark.parametrize("rule", RULES, ids=[r.importer for r in RULES])
def test_imports_follow_the_rule(rule: Rule) -> None:
    broken = _broken(rule, _all_arrows())
    assert not broken, f"{rule.importer} must not import {rule.forbidden} ({rule.why}):\n" + (
        "\n".join(broken)
    )


def test_the_walk_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The checker itself: absolute, from-, relative and function-level imports all count, so
    a rule cannot pass because the walk missed an arrow."""
    package = SRC / "fieldhub" / "hub" / "api"
    arrows = {a.imported for a in _imports(package / "app.py")}
    assert "fieldhub.hub.app.Hub" in arrows  # from ... import at the top
    rule = Rule("fieldhub.hub.api", ("fieldhub.hub.app",))
    assert _broken(rule, _all_arrows())  # the API does use the composition root's Hub
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from ..store import schema\n    import tests.support\n")
    found = {a.imported for a in _imports(probe, "fieldhub.hub.api.probe")}
    assert "fieldhub.hub.store.schema" in found
    assert "tests.support" in found


def test_the_hub_top_level_stays_small() -> None:
    """The hub's top level holds the composition root and a few shared modules; every concept
    has its wing (a subpackage). More modules here means a wing is missing."""
    top = sorted(p.name for p in (SRC / "fieldhub" / "hub").glob("*.py"))
    assert len(top) <= 8, top
    assert not (SRC / "fieldhub" / "testing").exists()
