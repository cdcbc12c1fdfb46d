"""How deeply free-form JSON may nest: the one rule for every JSON value fieldhub accepts.

Free-form values (event ``data``, reported and desired ``state``, command ``args`` and
``result``, and on the REST API device ``attributes`` and claim ``info``) may nest objects and
arrays at most :data:`MAX_NESTING` levels, counted from the value itself: ``{"a": {"b": 1}}``
is 2 levels, a scalar 0. Device data needs a handful; the limit exists because deeper values
break whoever handles them later: pydantic refuses to serialize beyond 255 levels (every list
holding such a value answered 500), and parsers recurse per level (msgspec raised
``RecursionError`` at about a thousand, out of an MQTT message handler).

The checks here are recursive but never go deeper than the limit, so they are safe on any input.
"""

from __future__ import annotations

from typing import Any, Final

MAX_NESTING: Final = 32
"""Deepest nesting of objects and arrays in a free-form JSON value (see the module doc)."""

CLIPPED: Final = f"(nested deeper than {MAX_NESTING} levels)"
"""What :func:`clip_nesting` puts in place of a container nested too deep."""


def exceeds_nesting(value: Any, limit: int = MAX_NESTING) -> bool:
    """True when ``value`` nests objects and arrays more than ``limit`` levels."""
    if isinstance(value, dict):
        children: Any = value.values()
    elif isinstance(value, list | tuple):
        children = value
    else:
        return False
    if limit <= 0:
        return True
    return any(exceeds_nesting(child, limit - 1) for child in children)


def check_nesting(value: Any, name: str, limit: int = MAX_NESTING) -> None:
    """Refuse a value nested deeper than ``limit``.

    Raises:
        ValueError: naming ``name`` and the limit (msgspec and pydantic both report a
            ``ValueError`` from a validator as a validation error of that field).
    """
    if exceeds_nesting(value, limit):
        raise ValueError(f"`{name}` nests objects and arrays deeper than {limit} levels")


def clip_nesting(value: Any, limit: int = MAX_NESTING) -> Any:
    """``value``, or a copy in which every container nested deeper than ``limit`` is replaced
    by :data:`CLIPPED`.

    For reading values stored before the limit existed: one such value then shows where it was
    cut, instead of failing the whole answer it is part of. A value within the limit is
    returned as it is (no copy).
    """
    if not exceeds_nesting(value, limit):
        return value
    return _clip(value, limit)


def _clip(value: Any, limit: int) -> Any:
    if isinstance(value, dict):
        if limit <= 0:
            return CLIPPED
        return {key: _clip(child, limit - 1) for key, child in value.items()}
    if isinstance(value, list | tuple):
        if limit <= 0:
            return CLIPPED
        return [_clip(child, limit - 1) for child in value]
    return value
