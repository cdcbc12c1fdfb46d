"""``fieldhub controller`` on its own: its file checked field by field, its command memory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fieldhub.controller.actions import ActionRunner
from fieldhub.controller.config import (
    ActionConfig,
    ConfigError,
    ControllerConfig,
    ValueSource,
    load_config,
)
from fieldhub.controller.memory import CommandMemory
from fieldhub.controller.service import QUEUE_LIMIT, Controller
from fieldhub.controller.values import read_value

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("id: a/b\ndata_dir: /tmp/x\n", "id: 1-64 characters"),
        ("id: c\n", "data_dir: a folder"),
        ("id: c\ndata_dir: /x\nlisten: nowhere\n", "listen: host:port"),
        ("id: c\ndata_dir: /x\nvalues: {t: {simulate: [3, 1]}}\n", "values.t.simulate: a range"),
        ("id: c\ndata_dir: /x\nvalues: {t: {file: a, command: [/b]}}\n", "values.t: exactly one"),
        ("id: c\ndata_dir: /x\nactions: {Go: {command: [/bin/true]}}\n", "'Go' is not a valid"),
        ("id: c\ndata_dir: /x\nactions: {go: {command: [bin/true]}}\n", "must be an absolute path"),
        (
            "id: c\ndata_dir: /x\nactions: {go: {command: [/a], args: {n: long}}}\n",
            "args.n: one of",
        ),
        (
            "id: c\ndata_dir: /x\nactions: {go: {command: [/a], args: {a: int, b: int}, "
            "state: relay}}\n",
            "actions.go.state: an action that applies a state key takes one argument",
        ),
        (
            "id: c\ndata_dir: /x\nactions: {a: {command: [/a], args: {n: int}, state: k}, "
            "b: {command: [/b], args: {n: int}, state: k}}\n",
            "actions.b.state: 'k' is applied by a",
        ),
        ("id: c\ndata_dir: /x\nactions: {go: {command: [/a], timeout_s: 0}}\n", "go.timeout_s: a"),
        ("id: c\ndata_dir: /x\nlisten_port: 1\n", "unknown field 'listen_port'"),
        ("id: c\ndata_dir: /x\nactions: {go: {command: [/a], args: {on: bool}}}\n", "quote it"),
    ],
)
def test_a_wrong_field_is_named(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "controller.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=problem) as error:
        load_config(path)
    assert str(error.value).startswith(f"{path}: ")


def test_the_command_line_exits_2_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "controller.yaml"
    path.write_text("id: c\ndata_dir: /x\nreport_every_s: -1\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    ended = subprocess.run(
        [sys.executable, "-m", "fieldhub", "controller", "--config", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert ended.returncode == 2
    assert f"{path}: report_every_s: a positive number of seconds" in ended.stderr


async def test_a_run_cut_short_by_a_restart_is_never_run_again(tmp_path: Path) -> None:
    memory_file = tmp_path / "commands.jsonl"
    memory_file.write_text('{"id":"c-1","running":true}\n{"id":"c-2","out')  # power cut
    marker = tmp_path / "ran"
    touch = ActionConfig("touch", ("/usr/bin/touch", str(marker)), {}, 5)
    runner = ActionRunner({"touch": touch}, CommandMemory(memory_file))
    outcome = await runner.run("c-1", "touch", {}, 5)
    assert outcome == {"status": "failed", "result": {}, "error": "interrupted, not retried"}
    assert not marker.exists()
    assert (await runner.run("c-2", "touch", {}, 5))["status"] == "succeeded"
    assert marker.exists()
    assert oct(memory_file.stat().st_mode & 0o777) == "0o600"


def test_the_controller_runs_on_the_standard_library_and_pyyaml() -> None:
    """What a small board must have: importing the controller loads nothing else of note."""
    probe = (
        "import sys; import fieldhub.controller.cli, fieldhub.controller.service; "
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'msgspec', 'typer', 'rich', 'pydantic', 'sqlalchemy', 'fastapi', 'cryptography'})))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    ended = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
    )
    assert ended.stdout.strip() == ""


async def test_values_come_from_a_file_or_a_program(tmp_path: Path) -> None:
    reading = tmp_path / "reading"
    reading.write_text("load: 0.42 1.0\n")
    assert await read_value(ValueSource("file", path=str(reading))) == 0.42
    assert await read_value(ValueSource("command", argv=("/bin/echo", "t=-3.5e1"))) == -35.0
    assert await read_value(ValueSource("file", path=str(tmp_path / "missing"))) is None
    assert await read_value(ValueSource("command", argv=("/bin/false",))) is None


def test_the_report_queue_is_bounded_and_counts_what_it_drops(tmp_path: Path) -> None:
    config = ControllerConfig(controller_id="c", data_dir=tmp_path / "c")
    controller = Controller(config)
    for n in range(QUEUE_LIMIT + 44):
        controller.report("event", {"type": "tick", "data": {"n": n}})
    assert controller.queued_reports == QUEUE_LIMIT
    assert controller.dropped_reports == 44
