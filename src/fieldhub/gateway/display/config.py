"""The ``display`` section of the gateway's YAML: which sinks, which template, how often.

Checked whole at load, so a wrong section stops the gateway's start naming the field
(``display.sinks[1].address: expected int``), like the agent's ``agent.yaml``. The structs
are msgspec's, so the gateway's own config schema may embed :class:`DisplayConfig` and get the
YAML line too (``fieldhub.agent.yamlconfig.load_yaml``); :func:`parse_display_config` checks a
section that arrives as plain data.

Example (docs/gateway-display.md)::

    display:
      template:
        - "{ctrl-1.temp:.1f}°C {ctrl-1:presence}"
        - "alarms {alarms}"
      sinks:
        - {type: serial, port: /dev/ttyUSB0}
        - {type: lcd, bus: 1, address: 0x27}
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec

from fieldhub.gateway.display.template import Template, TemplateError

__all__ = [
    "DisplayConfig",
    "DisplayConfigError",
    "LcdSinkConfig",
    "SerialSinkConfig",
    "parse_display_config",
]


class SerialSinkConfig(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, tag="serial"
):
    """A display that reads the line protocol over a serial port (an M5Stack over USB)."""

    port: Annotated[str, msgspec.Meta(min_length=1)]
    baud: Annotated[int, msgspec.Meta(ge=1200, le=4_000_000)] = 115_200
    width: Annotated[int, msgspec.Meta(ge=4, le=80)] = 26
    rows: Annotated[int, msgspec.Meta(ge=1, le=16)] = 4

    @property
    def name(self) -> str:
        """How logs and counters call this sink."""
        return f"serial:{self.port}"


class LcdSinkConfig(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, tag="lcd"
):
    """An HD44780 character LCD behind a PCF8574 I2C backpack."""

    bus: Annotated[int, msgspec.Meta(ge=0, le=255)] = 1  # /dev/i2c-1 on a Raspberry Pi
    address: Annotated[int, msgspec.Meta(ge=0x03, le=0x77)] = 0x27  # 0x3F on PCF8574A boards
    width: Literal[8, 16, 20, 24, 40] = 16
    rows: Literal[1, 2, 4] = 2
    backlight: bool = True

    @property
    def name(self) -> str:
        """How logs and counters call this sink."""
        return f"lcd:{self.bus}:0x{self.address:02x}"


SinkConfig = SerialSinkConfig | LcdSinkConfig


class DisplayConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The whole ``display`` section."""

    template: Annotated[list[str], msgspec.Meta(min_length=1, max_length=16)]
    sinks: Annotated[list[SinkConfig], msgspec.Meta(min_length=1, max_length=8)]
    refresh_hz: Annotated[float, msgspec.Meta(gt=0, le=50)] = 4.0
    """At most this many renders a second, per sink."""
    redraw_s: Annotated[float, msgspec.Meta(ge=1, le=3600)] = 60.0
    """The whole screen is written again at least this often: a display that restarted on
    its own (an M5Stack reset by its port) shows the screen again without a change."""
    reconnect_max_s: Annotated[float, msgspec.Meta(ge=0.1, le=300)] = 5.0
    """The longest wait between attempts to reach a sink that went away."""

    def __post_init__(self) -> None:
        try:
            self.parsed_template()
        except TemplateError as exc:
            raise ValueError(str(exc)) from None
        for index, sink in enumerate(self.sinks):
            if sink.rows < len(self.template):
                raise ValueError(
                    f"sinks[{index}] ({sink.name}) shows {sink.rows} rows; "
                    f"the template has {len(self.template)} lines"
                )
        names = [sink.name for sink in self.sinks]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"sinks given more than once: {twice}")

    def parsed_template(self) -> Template:
        """The template, parsed (it was checked at load)."""
        return Template(self.template)


class DisplayConfigError(ValueError):
    """The ``display`` section is wrong; ``str()`` names the field and the problem."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field, self.problem = field, problem


_AT = re.compile(r"^(?P<problem>.*) - at `\$(?P<path>[^`]*)`$")
_FIELD_IN_PROBLEM = re.compile(r"field `([^`]+)`")


def parse_display_config(section: object, where: str = "display") -> DisplayConfig:
    """Check ``section`` (the ``display`` mapping of the gateway's YAML, as plain data).

    Raises:
        DisplayConfigError: the field (``display.sinks[0].baud``) and what is wrong with it.
    """
    try:
        return msgspec.convert(section, DisplayConfig, strict=False)
    except msgspec.ValidationError as exc:
        found = _AT.match(str(exc))
        problem, path = (found["problem"], found["path"]) if found else (str(exc), "")
        named = _FIELD_IN_PROBLEM.search(problem)
        if named is not None:  # "missing required field `port`" is reported at its mapping
            path = f"{path}.{named[1]}"
        raise DisplayConfigError(f"{where}{path}", problem.replace("`", "")) from None
