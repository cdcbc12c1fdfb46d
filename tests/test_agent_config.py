"""agent.yaml: a wrong file fails at once, naming the file, the line and the field."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from fieldhub.agent.yamlconfig import ConfigError, load_yaml


class Pin(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    pin: int
    bounce_ms: int = 50


class Doc(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    device: str
    units: list[Pin] = []


def _load(tmp_path: Path, text: str) -> Doc:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    return load_yaml(path, Doc)


def _error(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    return caught.value


GOOD = """\
device: atm-1
units:
  - name: door
    pin: 27
  - name: led
    pin: 17
"""


def test_a_good_file_loads(tmp_path: Path):
    assert _load(tmp_path, GOOD) == Doc("atm-1", [Pin("door", 27), Pin("led", 17)])


@pytest.mark.parametrize(
    ("text", "line", "field", "problem"),
    [
        (GOOD.replace("pin: 17", "pin: seventeen"), 6, "units[1].pin", "expected int"),
        (GOOD.replace("    pin: 27\n", ""), 3, "units[0].pin", "missing required field"),
        (GOOD.replace("pin: 17", "pin: 17\n    pinn: 18"), 7, "units[1].pinn", "unknown field"),
        (GOOD.replace("device: atm-1", "device: [atm-1"), 2, "", "not valid YAML"),
        (GOOD + "device: atm-2\n", 7, "device", "given twice (first on line 1)"),
        ("units: []\n", 1, "device", "missing required field"),
        ("- just\n- a list\n", 1, "", "expected object"),
    ],
)
def test_a_wrong_file_names_line_and_field(
    tmp_path: Path, text: str, line: int, field: str, problem: str
):
    error = _error(tmp_path, text)
    assert (error.line, error.field) == (line, field)
    assert problem in error.problem
    assert str(error).startswith(f"{tmp_path / 'agent.yaml'}:{line}: ")


def test_missing_and_empty_files_are_clear(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_yaml(tmp_path / "nope.yaml", Doc)
    assert "empty" in str(_error(tmp_path, "# nothing\n"))


def test_the_focuspro_example_loads_as_documented():
    from fieldhub.agent.config import load_config

    example = Path(__file__).parent.parent / "deploy" / "agent.example.yaml"
    config = load_config(example)
    assert config.device.id == "atm-0042"
    assert [type(u).__struct_config__.tag for u in config.units] == [
        "led",
        "door",
        "socket",
        "socket_check",
        "temperature",
        "voltage",
    ]
    assert [a.name for a in config.actions] == ["atm.selftest"]


def test_unit_names_must_be_unique(tmp_path: Path):
    from fieldhub.agent.config import load_config

    path = tmp_path / "agent.yaml"
    path.write_text(
        "device: {id: atm-1}\nhub: {broker: 'mqtt://h:1883', username: atm-1.0a1b2c3d,"
        " secret: s}\nunits:\n  - {type: door, name: door, pin: 27}\n"
        "  - {type: led, name: door, pin: 17}\n"
    )
    with pytest.raises(ConfigError, match="unique"):
        load_config(path)


def test_an_mqtts_broker_takes_a_ca_file_and_a_pin(tmp_path: Path):
    from fieldhub.agent.config import load_config

    path = tmp_path / "agent.yaml"
    pin = "AB:" * 31 + "CD"  # as openssl may print it
    path.write_text(
        "device: {id: atm-1}\nhub:\n  broker: 'mqtts://hub.example.net:8883'\n"
        f"  username: atm-1.0a1b2c3d\n  secret: s\n  ca_file: /etc/ca.pem\n  pin_sha256: '{pin}'\n"
    )
    hub = load_config(path).hub
    assert (hub.broker, hub.ca_file, hub.pin_sha256) == (
        "mqtts://hub.example.net:8883",
        "/etc/ca.pem",
        pin,
    )


@pytest.mark.parametrize(
    ("broker", "extra", "problem"),
    [
        ("mqtt://h:1883", "ca_file: /etc/ca.pem", "ca_file needs an mqtts:// or wss:// broker"),
        (
            "mqtt://h:1883",
            "pin_sha256: " + "a" * 64,
            "pin_sha256 needs an mqtts:// or wss:// broker",
        ),
        ("mqtts://h:8883", "pin_sha256: abc", "the pin must be a SHA-256 in hex (64 digits)"),
    ],
)
def test_tls_settings_that_cannot_work_stop_the_agent_at_load(
    tmp_path: Path, broker: str, extra: str, problem: str
):
    from fieldhub.agent.config import load_config

    path = tmp_path / "agent.yaml"
    path.write_text(
        f"device: {{id: atm-1}}\nhub:\n  broker: '{broker}'\n"
        f"  username: atm-1.0a1b2c3d\n  secret: s\n  {extra}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert (caught.value.line, caught.value.field) == (3, "hub")
    assert problem in caught.value.problem
