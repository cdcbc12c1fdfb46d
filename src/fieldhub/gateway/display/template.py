"""The display's template: lines of text with placeholders, checked once, rendered often.

A template line such as ``{ctrl-1.temp:.1f}°C {ctrl-1:presence}`` is parsed at config load
into literal text and placeholders; an unknown placeholder or format stops the gateway's start
with the line and the reason, never a blank display in the field. Rendering never calls
``str.format`` on the template: the text is split here, and the only formatting is the
built-in ``format(value, spec)`` of one number or string with a spec this module allowed, so
no placeholder can reach an attribute or an index. Values come from controllers (untrusted):
control characters are replaced, so a value can never break a sink's line protocol.

The placeholders (docs/gateway-display.md):

- ``{ID.KEY}`` / ``{ID.KEY:SPEC}``: the newest value of controller ``ID``'s ``KEY``; ``SPEC``
  is a small format spec (alignment, sign, width, precision, ``d``/``f``/``e``/``%``), e.g.
  ``.1f``. A controller id that contains a dot is written in brackets: ``{[hall.2].temp}``.
- ``{ID:presence}``: the controller's link state (``linked``, ``offline``, ``pairing``…).
- ``{hub}``: the gateway's own link to the hub (``online`` or ``offline``).
- ``{alarms}``: the number of open alarms; ``{alarms:newest}``: the newest one's title.
- ``{{`` and ``}}``: a literal brace.

Anything not known yet (no value, no presence, no alarm) shows as ``--``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Final

__all__ = ["MISSING", "Facts", "Template", "TemplateError", "fit"]

MISSING: Final = "--"
"""What a placeholder shows while its value is not known."""

Value = float | int | str | bool

_ID = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
_DOTTED_ID = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"  # the device id rule of fieldhub.protocol
_KEY = r"[A-Za-z_][A-Za-z0-9_.-]{0,63}"  # the telemetry key rule of fieldhub.protocol
_SPEC = r"[<>^]?[+ ]?\d{0,2}(?:\.\d)?[dfe%]?"
_VALUE = re.compile(
    rf"^(?:\[(?P<quoted>{_DOTTED_ID})\]|(?P<plain>{_ID}))\.(?P<key>{_KEY})(?::(?P<spec>{_SPEC}))?$"
)
_PRESENCE = re.compile(rf"^(?:\[(?P<quoted>{_DOTTED_ID})\]|(?P<plain>{_ID})):presence$")
_KNOWN = (
    "{hub}, {alarms}, {alarms:newest}, {ID.KEY}, {ID.KEY:FORMAT} (e.g. .1f) or {ID:presence}; "
    "{{ and }} for a brace"
)
MAX_LINE_CHARS: Final = 200


class TemplateError(ValueError):
    """A template line is wrong; ``str()`` says which line, where and why."""


@dataclass(frozen=True, slots=True)
class _ValueField:
    controller: str
    key: str
    spec: str


@dataclass(frozen=True, slots=True)
class _PresenceField:
    controller: str


@dataclass(frozen=True, slots=True)
class _AlarmsField:
    newest: bool


@dataclass(frozen=True, slots=True)
class _HubField:
    pass


_Part = str | _ValueField | _PresenceField | _AlarmsField | _HubField


@dataclass(slots=True)
class Facts:
    """What the display knows: the values and presence the template names, the gateway's
    link to the hub, and the alarms."""

    values: dict[tuple[str, str], Value]
    presence: dict[str, str]
    hub: str | None = None
    open_alarms: int | None = None
    newest_alarm: str | None = None


class Template:
    """Parsed template lines; ``render`` fills them from :class:`Facts`."""

    def __init__(self, lines: list[str]) -> None:
        """Raises:
        TemplateError: a line has an unknown placeholder, a bad format or a lone brace.
        """
        self._lines = [_parse(index, line) for index, line in enumerate(lines)]
        fields = [part for line in self._lines for part in line if not isinstance(part, str)]
        self.value_keys: frozenset[tuple[str, str]] = frozenset(
            (f.controller, f.key) for f in fields if isinstance(f, _ValueField)
        )
        """The (controller, key) pairs the template shows: the display keeps only these."""
        self.controllers: frozenset[str] = frozenset(
            f.controller for f in fields if isinstance(f, _PresenceField)
        )
        """The controllers whose presence the template shows."""

    def __len__(self) -> int:
        return len(self._lines)

    def render(self, facts: Facts, width: int, rows: int) -> list[str]:
        """``rows`` lines of exactly ``width`` characters (cut or padded; blank below)."""
        lines = ["".join(_text(part, facts) for part in line) for line in self._lines]
        return fit(lines, width, rows)


def fit(lines: list[str], width: int, rows: int) -> list[str]:
    """``lines`` made safe for a sink: printable only, ``width`` characters each, ``rows``
    lines (cut or padded with blanks). The one home of that rule, for templates and messages."""
    shown = [_printable(line)[:width].ljust(width) for line in lines[:rows]]
    return shown + [" " * width] * (rows - len(shown))


def _printable(text: str) -> str:
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else "?" for c in text)


def _text(part: _Part, facts: Facts) -> str:
    if isinstance(part, str):
        return part
    if isinstance(part, _ValueField):
        value = facts.values.get((part.controller, part.key))
        return MISSING if value is None else _formatted(value, part.spec)
    if isinstance(part, _PresenceField):
        return facts.presence.get(part.controller, MISSING)
    if isinstance(part, _HubField):
        return facts.hub or MISSING
    if part.newest:
        return facts.newest_alarm or MISSING
    return MISSING if facts.open_alarms is None else str(facts.open_alarms)


def _formatted(value: Value, spec: str) -> str:
    """``value`` under ``spec``; a spec that does not suit the value (``.1f`` on a string)
    shows the value plainly rather than nothing."""
    if isinstance(value, bool):
        value = "on" if value else "off"
    try:
        return format(value, spec)
    except ValueError:
        return str(value)


def _parse(index: int, line: str) -> list[_Part]:
    where = f"template[{index}]"
    if len(line) > MAX_LINE_CHARS:
        raise TemplateError(f"{where}: longer than {MAX_LINE_CHARS} characters")
    if any(unicodedata.category(c) == "Cc" for c in line):
        raise TemplateError(f"{where}: control characters (a tab, a line break) are not shown")
    parts: list[_Part] = []
    literal: list[str] = []
    position = 0
    while position < len(line):
        char = line[position]
        if char in "{}" and line[position + 1 : position + 2] == char:
            literal.append(char)
            position += 2
            continue
        if char == "}":
            raise TemplateError(
                f"{where}: '}}' at column {position + 1} closes nothing (write }}}})"
            )
        if char != "{":
            literal.append(char)
            position += 1
            continue
        end = line.find("}", position)
        if end < 0:
            raise TemplateError(
                f"{where}: '{{' at column {position + 1} is never closed (write {{{{)"
            )
        if literal:
            parts.append("".join(literal))
            literal = []
        parts.append(_field(where, line[position + 1 : end]))
        position = end + 1
    if literal:
        parts.append("".join(literal))
    return parts


def _field(where: str, inside: str) -> _Part:
    if inside == "hub":
        return _HubField()
    if inside in ("alarms", "alarms:newest"):
        return _AlarmsField(newest=inside == "alarms:newest")
    found = _VALUE.match(inside)
    if found:
        return _ValueField(found["quoted"] or found["plain"], found["key"], found["spec"] or "")
    found = _PRESENCE.match(inside)
    if found:
        return _PresenceField(found["quoted"] or found["plain"])
    raise TemplateError(f"{where}: unknown placeholder {{{inside}}}; known: {_KNOWN}")
