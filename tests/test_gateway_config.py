"""``gateway.yaml``: the example loads; a wrong field stops the gateway naming line and field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fieldhub.gateway.config import ConfigError, load_config

EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "gateway.example.yaml"


def test_the_example_loads() -> None:
    config = load_config(EXAMPLE)
    assert config.gateway.id == "gw-1"
    assert config.data_dir == Path("/var/lib/fieldhub-gateway")
    assert config.lan["static"] == ["192.168.20.31:7070"]
    assert config.display is None


def test_a_wrong_field_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "gateway: {id: gw-1}\nhub:\n  broker: mqtt://hub:1883\n  username: gw-1.x\n"
        "  secret: s\ncommands:\n  max_timeout_s: -1\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}:7: commands.max_timeout_s")


def test_a_wrong_lan_section_stops_the_program_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "gateway: {id: gw-1}\nhub:\n  broker: mqtt://127.0.0.1:1\n  username: gw-1.x\n"
        f"  secret: s\ndata_dir: '{tmp_path / 'data'}'\nlan: {{heartbeats: 5}}\n"
    )
    ran = subprocess.run(
        [sys.executable, "-m", "fieldhub", "gateway", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 2, ran.stderr
    assert "lan" in ran.stderr
    assert "heartbeats" in ran.stderr
    assert "Traceback" not in ran.stderr


def test_the_gateway_runs_without_typer(tmp_path: Path) -> None:
    """systemd's command line skips typer, rich and pydantic (megabytes of the 60 MB budget)."""
    path = tmp_path / "gateway.yaml"
    path.write_text("gateway: {id: gw-1}\nnonsense: 1\n")
    probe = (
        "import sys; from fieldhub.cli import plain; "
        f"code = plain.main(['gateway', '-c', {str(path)!r}, '-v']); "
        "print(code, 'typer' in sys.modules, 'rich' in sys.modules)"
    )
    ran = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert ran.stdout.split() == ["2", "False", "False"], ran.stderr
    assert "nonsense" in ran.stderr
