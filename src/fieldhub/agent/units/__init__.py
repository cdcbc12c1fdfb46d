"""Hardware units of the agent: their configs (one tagged union for the YAML) and a factory.

The config loader decodes the ``units:`` list of ``agent.yaml`` into :data:`UnitConfig` (each
item's ``type`` picks the struct; unknown fields are errors), then the agent builds the units::

    units = build_units(configs, drivers, reporter)
    for unit in units:
        await unit.start()

Unit types: ``led``, ``door``, ``socket`` (also as a lock), ``socket_check``, ``temperature``,
``voltage``, ``camera``. See each module for what it reports.

A camera's config is part of the schema (``camera_config.py``), but the unit itself, and the
media spool behind it, are imported only when a config has one (:func:`_camera`): a plain
agent's memory budget has no room for them (docs/agent.md, "Memory").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from fieldhub.agent.reporting import Reporter
from fieldhub.agent.units.base import ActionSpec, Unit, UnitConfigError, UnitError, UnitStartError
from fieldhub.agent.units.camera_config import CameraConfig
from fieldhub.agent.units.check import SocketCheckConfig, SocketCheckUnit
from fieldhub.agent.units.door import DoorConfig, DoorUnit
from fieldhub.agent.units.drivers import Drivers, mock_pin_factory
from fieldhub.agent.units.led import LedConfig, LedUnit
from fieldhub.agent.units.relay import SocketConfig, SocketUnit
from fieldhub.agent.units.temperature import SensorConfig, TemperatureConfig, TemperatureUnit
from fieldhub.agent.units.voltage import AdcConfig, VoltageConfig, VoltageUnit

if TYPE_CHECKING:  # imported by _camera, when a config has a camera
    from fieldhub.agent.media.spool import MediaSpool
    from fieldhub.agent.units.camera import CameraUnit

__all__ = [
    "ActionSpec",
    "AdcConfig",
    "CameraConfig",
    "DoorConfig",
    "DoorUnit",
    "Drivers",
    "LedConfig",
    "LedUnit",
    "SensorConfig",
    "SocketCheckConfig",
    "SocketCheckUnit",
    "SocketConfig",
    "SocketUnit",
    "TemperatureConfig",
    "TemperatureUnit",
    "Unit",
    "UnitConfig",
    "UnitConfigError",
    "UnitError",
    "UnitStartError",
    "VoltageConfig",
    "VoltageUnit",
    "build_unit",
    "build_units",
    "mock_pin_factory",
]

UnitConfig = (
    LedConfig
    | DoorConfig
    | SocketConfig
    | SocketCheckConfig
    | TemperatureConfig
    | VoltageConfig
    | CameraConfig
)
"""Any unit's config; msgspec picks the struct by the ``type`` field."""


def build_unit(
    config: UnitConfig,
    drivers: Drivers,
    reporter: Reporter,
    others: Mapping[str, Unit] | None = None,
    spool: MediaSpool | None = None,
) -> Unit:
    """Make the unit a config describes (not started).

    Args:
        config: The unit's config.
        drivers: Hardware access.
        reporter: Where it reports.
        others: Units already built, by name: a ``socket_check`` finds its socket there.
        spool: Where a ``camera`` keeps its pictures (the agent's media spool).

    Raises:
        UnitConfigError: A ``socket_check`` names no ``socket`` unit in ``others``, or a
            ``camera`` has no spool.
    """
    match config:
        case LedConfig():
            return LedUnit(config, drivers, reporter)
        case DoorConfig():
            return DoorUnit(config, drivers, reporter)
        case SocketConfig():
            return SocketUnit(config, drivers, reporter)
        case TemperatureConfig():
            return TemperatureUnit(config, drivers, reporter)
        case VoltageConfig():
            return VoltageUnit(config, drivers, reporter)
        case CameraConfig():
            return _camera(config, drivers, reporter, spool)
        case SocketCheckConfig():
            socket = (others or {}).get(config.socket)
            if not isinstance(socket, SocketUnit):
                raise UnitConfigError(
                    f"Unit {config.name!r} checks socket {config.socket!r}, but there is no "
                    "unit of type 'socket' with that name."
                )
            return SocketCheckUnit(config, drivers, reporter, socket)


def build_units(
    configs: Sequence[UnitConfig],
    drivers: Drivers,
    reporter: Reporter,
    spool: MediaSpool | None = None,
) -> list[Unit]:
    """Make all units of a config, in its order; checks that fit across units.

    Names must be unique (they prefix state keys and action names), and every
    ``socket_check`` must name a ``socket`` unit (anywhere in the list). Two units on one pin
    are found by gpiozero at start (``UnitStartError``). Cameras are made first: the other
    units report through them, so that their events can take a picture (``capture_on``).

    Raises:
        UnitConfigError: The message names the units involved.
    """
    seen: dict[str, UnitConfig] = {}
    for config in configs:
        if config.name in seen:
            raise UnitConfigError(f"Two units are named {config.name!r}; names must be unique.")
        seen[config.name] = config
    built: dict[str, Unit] = {}
    watched = reporter
    for config in configs:
        if isinstance(config, CameraConfig):
            camera = _camera(config, drivers, reporter, spool)
            built[config.name] = camera
            watched = camera.watching(watched)
    # Sockets first, so a socket_check listed before its socket still finds it.
    for config in sorted(configs, key=lambda c: not isinstance(c, SocketConfig)):
        if config.name not in built:
            built[config.name] = build_unit(config, drivers, watched, built)
    return [built[config.name] for config in configs]


def _camera(
    config: CameraConfig, drivers: Drivers, reporter: Reporter, spool: MediaSpool | None
) -> CameraUnit:
    if spool is None:
        raise UnitConfigError(f"Camera {config.name!r} needs the agent's media spool.")
    from fieldhub.agent.units.camera import CameraUnit  # see the module docstring

    return CameraUnit(config, drivers, reporter, spool)
