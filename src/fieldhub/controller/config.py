"""The controller's YAML file, checked field by field with errors that name the field.

::

    id: ctrl-1                       # the child device's id in the hub
    data_dir: /var/lib/fieldhub-controller   # its key and command memory (0700)
    listen: 0.0.0.0:7410             # the TCP server the gateway dials
    announce: {to: 255.255.255.255, port: 7411, every_s: 10}
    report_every_s: 10               # one telemetry report of every value
    values:
      temperature: {simulate: [18, 24]}       # made up, within the range
      load: {file: /proc/loadavg}             # the first number of a file
      free_mb: {command: [/usr/local/bin/free-mb]}   # the first number a program prints
    actions:
      relay.cycle:
        command: [/usr/local/bin/relay, cycle]   # argv, no shell; arguments come as FIELDHUB_ARG_*
        args: {off_s: float}
        timeout_s: 10
      relay.set:
        command: [/usr/local/bin/relay, set]
        args: {closed: bool}
        state: relay                 # desired `relay` applies through this action (docs/gateway.md)

Standard library and PyYAML only (the controller runs on small boards), hence no msgspec here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import yaml

from fieldhub.lan import DEFAULT_ANNOUNCE_PORT, DEFAULT_TCP_PORT
from fieldhub.lan.discovery import CONTROLLER_ID_PATTERN

__all__ = ["ActionConfig", "ConfigError", "ControllerConfig", "ValueSource", "load_config"]

ARG_TYPES: Final = ("int", "float", "bool", "str")
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_ARG = re.compile(r"[a-z][a-z0-9_]{0,31}")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
MAX_TIMEOUT_S: Final = 3600.0


class ConfigError(ValueError):
    """The file is unreadable or wrong; the message names the file and the field."""


@dataclass(frozen=True, slots=True)
class ValueSource:
    """Where one value comes from: ``simulate`` (a range), ``file`` or ``command``."""

    kind: Literal["simulate", "file", "command"]
    low: float = 0.0
    high: float = 0.0
    path: str = ""
    argv: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ActionConfig:
    """One action: a program run without a shell, its typed arguments and its timeout."""

    name: str
    argv: tuple[str, ...]
    args: dict[str, str]
    timeout_s: float
    state: str = ""
    """The desired-state key this action applies, its one argument taking the key's value
    (``controller/desired.py``); empty for none."""


@dataclass(frozen=True, slots=True)
class ControllerConfig:
    controller_id: str
    data_dir: Path
    listen_host: str = "0.0.0.0"
    listen_port: int = DEFAULT_TCP_PORT
    announce_to: str = "255.255.255.255"
    announce_port: int = DEFAULT_ANNOUNCE_PORT
    announce_every_s: float = 10.0
    report_every_s: float = 10.0
    heartbeat_s: float = 5.0
    firmware: str = ""
    values: dict[str, ValueSource] = field(default_factory=dict)
    actions: dict[str, ActionConfig] = field(default_factory=dict)


def load_config(path: Path) -> ControllerConfig:
    """Read and check the controller's YAML file.

    Raises:
        ConfigError: naming the file and the wrong field.
    """
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        return _parse(raw if raw is not None else {})
    except _Wrong as exc:
        raise ConfigError(f"{path}: {exc}") from None


class _Wrong(ValueError):
    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")


def _parse(raw: Any) -> ControllerConfig:
    top = _mapping(raw, "(top level)")
    _known(
        top,
        "(top level)",
        {
            "id",
            "data_dir",
            "listen",
            "announce",
            "report_every_s",
            "heartbeat_s",
            "firmware",
            "values",
            "actions",
        },
    )
    controller_id = top.get("id")
    if not isinstance(controller_id, str) or not re.fullmatch(CONTROLLER_ID_PATTERN, controller_id):
        raise _Wrong("id", "1-64 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit")
    data_dir = top.get("data_dir")
    if not isinstance(data_dir, str) or not data_dir:
        raise _Wrong("data_dir", "a folder for the controller's key and command memory is required")
    host, port = _address(top.get("listen", f"0.0.0.0:{DEFAULT_TCP_PORT}"), "listen")
    announce = _mapping(top.get("announce", {}), "announce")
    _known(announce, "announce", {"to", "port", "every_s"})
    announce_to = announce.get("to", "255.255.255.255")
    if not isinstance(announce_to, str):
        raise _Wrong("announce.to", "an IPv4 address (the broadcast address of the LAN)")
    values = _mapping(top.get("values", {}), "values")
    actions = _mapping(top.get("actions", {}), "actions")
    firmware = top.get("firmware", "")
    if not isinstance(firmware, str):
        raise _Wrong("firmware", "a string")
    return ControllerConfig(
        controller_id=controller_id,
        data_dir=Path(data_dir),
        listen_host=host,
        listen_port=port,
        announce_to=announce_to,
        announce_port=_port(announce.get("port", DEFAULT_ANNOUNCE_PORT), "announce.port"),
        announce_every_s=_seconds(announce.get("every_s", 10), "announce.every_s"),
        report_every_s=_seconds(top.get("report_every_s", 10), "report_every_s"),
        heartbeat_s=_seconds(top.get("heartbeat_s", 5), "heartbeat_s"),
        firmware=firmware,
        values={_value_key(k): _value(v, f"values.{k}") for k, v in values.items()},
        actions=_state_keys_once({_action_name(k): _action(k, v) for k, v in actions.items()}),
    )


def _value(raw: Any, where: str) -> ValueSource:
    spec = _mapping(raw, where)
    _known(spec, where, {"simulate", "file", "command"})
    if len(spec) != 1:
        raise _Wrong(where, "exactly one of `simulate`, `file` or `command`")
    if "simulate" in spec:
        bounds = spec["simulate"]
        if (
            not isinstance(bounds, list)
            or len(bounds) != 2
            or not all(isinstance(b, int | float) and not isinstance(b, bool) for b in bounds)
            or bounds[0] > bounds[1]
        ):
            raise _Wrong(f"{where}.simulate", "a range [low, high] of two numbers")
        return ValueSource("simulate", low=float(bounds[0]), high=float(bounds[1]))
    if "file" in spec:
        if not isinstance(spec["file"], str) or not spec["file"].startswith("/"):
            raise _Wrong(f"{where}.file", "an absolute path")
        return ValueSource("file", path=spec["file"])
    return ValueSource("command", argv=_argv(spec["command"], f"{where}.command"))


def _action(name: str, raw: Any) -> ActionConfig:
    where = f"actions.{name}"
    spec = _mapping(raw, where)
    _known(spec, where, {"command", "args", "timeout_s", "state"})
    args = _mapping(spec.get("args", {}), f"{where}.args")
    for arg, kind in args.items():
        if isinstance(arg, bool):
            raise _Wrong(f"{where}.args", f"{arg} as a name: YAML reads on/off/yes/no so; quote it")
        if not isinstance(arg, str) or not _ARG.fullmatch(arg):
            raise _Wrong(f"{where}.args", f"{arg!r} is not a valid argument name")
        if kind not in ARG_TYPES:
            raise _Wrong(f"{where}.args.{arg}", f"one of {', '.join(ARG_TYPES)}")
    timeout = _seconds(spec.get("timeout_s", 30), f"{where}.timeout_s")
    if timeout > MAX_TIMEOUT_S:
        raise _Wrong(f"{where}.timeout_s", f"at most {MAX_TIMEOUT_S:g} s")
    state = spec.get("state", "")
    if state != "" and (not isinstance(state, str) or not _KEY.fullmatch(state)):
        raise _Wrong(f"{where}.state", f"{state!r} is not a valid state key")
    if state and len(args) != 1:
        raise _Wrong(f"{where}.state", "an action that applies a state key takes one argument")
    argv = _argv(spec.get("command"), f"{where}.command")
    return ActionConfig(name, argv, dict(args), timeout, state)


def _state_keys_once(actions: dict[str, ActionConfig]) -> dict[str, ActionConfig]:
    seen: dict[str, str] = {}
    for name, action in actions.items():
        if not action.state:
            continue
        if action.state in seen:
            raise _Wrong(
                f"actions.{name}.state", f"{action.state!r} is applied by {seen[action.state]}"
            )
        seen[action.state] = name
    return actions


def _mapping(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _Wrong(where, "a mapping")
    return raw


def _known(spec: dict[str, Any], where: str, allowed: set[str]) -> None:
    unknown = sorted(str(k) for k in spec if k not in allowed)
    if unknown:
        raise _Wrong(where, f"unknown field {unknown[0]!r} (known: {', '.join(sorted(allowed))})")


def _argv(raw: Any, where: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw or not all(isinstance(a, str) for a in raw):
        raise _Wrong(where, "a list of strings (argv, no shell)")
    if not raw[0].startswith("/"):
        raise _Wrong(where, "the program must be an absolute path")
    return tuple(raw)


def _address(raw: Any, where: str) -> tuple[str, int]:
    if not isinstance(raw, str) or ":" not in raw:
        raise _Wrong(where, "host:port")
    host, _, port = raw.rpartition(":")
    try:
        return host, _port(int(port), where)
    except ValueError:
        raise _Wrong(where, "host:port") from None


def _port(raw: Any, where: str) -> int:
    if not isinstance(raw, int) or isinstance(raw, bool) or not 0 <= raw <= 65535:
        raise _Wrong(where, "a port from 0 to 65535")
    return raw


def _seconds(raw: Any, where: str) -> float:
    if not isinstance(raw, int | float) or isinstance(raw, bool) or not raw > 0:
        raise _Wrong(where, "a positive number of seconds")
    return float(raw)


def _value_key(key: Any) -> str:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise _Wrong("values", f"{key!r} is not a valid value name")
    return key


def _action_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise _Wrong("actions", f"{name!r} is not a valid action name (lower case, . _ -)")
    return name
