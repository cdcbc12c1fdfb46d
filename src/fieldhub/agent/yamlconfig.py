"""Load a YAML file into a typed structure, or fail naming the file, line and field.

A technician editing ``agent.yaml`` on a Pi needs "agent.yaml:14: units[2].pin: expected an
integer", not a traceback. PyYAML composes the document into nodes that remember where they
start; msgspec validates the plain data and says *where* (``$.units[2].pin``) it failed; this
module walks the nodes along that path to find the line. Duplicate keys, which PyYAML would
silently resolve to the last one, are refused here too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TypeVar

import msgspec
import yaml

T = TypeVar("T")

_AT = re.compile(r"^(?P<message>.*) - at `(?P<path>\$[^`]*)`$")
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_FIELD_IN_MESSAGE = re.compile(r"field `([^`]+)`")


class ConfigError(ValueError):
    """A configuration file is unreadable or wrong; ``str()`` names file, line and field."""

    def __init__(self, path: Path, line: int | None, field: str, problem: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {field + ': ' if field else ''}{problem}")
        self.path, self.line, self.field, self.problem = path, line, field, problem


def load_yaml(path: Path, schema: type[T]) -> T:
    """Read ``path`` and convert it to ``schema`` (a msgspec Struct, usually).

    Raises:
        ConfigError: the file cannot be read, is not YAML, has duplicate keys, or does not
            match ``schema``; the message names the line and the field.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, None, "", f"cannot read: {exc}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(path, line, "", f"not valid YAML: {exc.problem}") from None
    if root is None:
        raise ConfigError(path, None, "", "the file is empty")
    _refuse_duplicate_keys(path, root, "")
    data = yaml.SafeLoader(text).get_single_data()
    try:
        return msgspec.convert(data, schema, strict=False)
    except msgspec.ValidationError as exc:
        raise _located(path, root, str(exc)) from None


def _refuse_duplicate_keys(path: Path, node: yaml.Node, where: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            field = f"{where}.{key}" if where else key
            if key in seen:
                raise ConfigError(
                    path,
                    key_node.start_mark.line + 1,
                    field,
                    f"given twice (first on line {seen[key]})",
                )
            seen[key] = key_node.start_mark.line + 1
            _refuse_duplicate_keys(path, value_node, field)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _refuse_duplicate_keys(path, item, f"{where}[{index}]")


def _located(path: Path, root: yaml.Node, error: str) -> ConfigError:
    """Turn msgspec's ``"<problem> - at `$.a[1].b`"`` into a ConfigError with the line."""
    match = _AT.match(error)
    problem, dotted = (match["message"], match["path"]) if match else (error, "$")
    node, field = _walk(root, dotted)
    # "missing required field `x`" / "unknown field `x`" are reported at the mapping: point at
    # the unknown key itself where there is one, and name the field either way.
    named = _FIELD_IN_MESSAGE.search(problem)
    if named is not None:
        field = f"{field}.{named[1]}" if field else named[1]
        if isinstance(node, yaml.MappingNode):
            for key_node, _value in node.value:
                if key_node.value == named[1]:
                    node = key_node
                    break
    return ConfigError(path, node.start_mark.line + 1, field, _plain(problem))


def _walk(root: yaml.Node, dotted: str) -> tuple[yaml.Node, str]:
    """The node at msgspec's path (as far as the document has it) and the path as written."""
    node, field = root, ""
    for name, index in _STEP.findall(dotted[1:]):
        if name and isinstance(node, yaml.MappingNode):
            found = next((v for k, v in node.value if str(k.value) == name), None)
            if found is None:
                break
            node, field = found, f"{field}.{name}" if field else name
        elif index and isinstance(node, yaml.SequenceNode) and int(index) < len(node.value):
            node, field = node.value[int(index)], f"{field}[{index}]"
        else:
            break
    return node, field


def _plain(problem: str) -> str:
    """msgspec's wording, lightly adapted for people: backticks away."""
    return problem.replace("`", "").replace("Expected", "expected").replace("Object ", "")
