"""1-Wire thermometers (DS18B20): sensor ids, and reading them through owserver or the kernel.

Two ways to reach the same sensors, because Pis are set up both ways: owserver (owfs; the
FocusPro seed's choice, also for USB and I²C bus masters) read with pyownet, or the kernel's
``w1-gpio`` + ``w1-therm`` drivers, read from sysfs.

The two spell a sensor's 64-bit ROM id differently: owfs writes the family code, a dot and the
six serial bytes in ROM order (``28.9DB6AB050000``); the kernel writes the family code, a dash
and the serial as one little-endian number, so the bytes come reversed and in lower case
(``28-000005abb69d``). Both are accepted in the config and mean the same sensor; inside, ids
are owfs-style.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import msgspec

from fieldhub.agent.units import _hw
from fieldhub.agent.units.drivers import Unreadable

__all__ = [
    "POWER_ON_MILLI_C",
    "OwserverSource",
    "SensorId",
    "SysfsSource",
    "kernel_id",
    "owfs_id",
]

SENSOR_ID_PATTERN = r"^[0-9A-Fa-f]{2}[.-][0-9A-Fa-f]{12}$"
SensorId = Annotated[str, msgspec.Meta(pattern=SENSOR_ID_PATTERN)]
"""A 1-Wire id as owfs (``28.9DB6AB050000``) or the kernel (``28-000005abb69d``) shows it."""

_SENSOR_ID = re.compile(SENSOR_ID_PATTERN)

POWER_ON_MILLI_C = 85000
"""What a DS18B20 reports before its first conversion (power-on reset value). Through the
kernel a brown-out or a conversion cut short reads as exactly 85.000 °C; it is taken as a
failed read, not as a temperature."""


def owfs_id(sensor_id: str) -> str:
    """The owfs spelling of a sensor id given either way.

    Raises:
        ValueError: ``sensor_id`` is neither spelling.
    """
    if not _SENSOR_ID.match(sensor_id):
        raise ValueError(
            f"1-Wire id {sensor_id!r} is neither 'FF.SSSSSSSSSSSS' (owfs) "
            "nor 'ff-ssssssssssss' (kernel)"
        )
    family, serial = sensor_id[:2].upper(), sensor_id[3:].upper()
    if sensor_id[2] == "-":
        serial = bytes.fromhex(serial)[::-1].hex().upper()
    return f"{family}.{serial}"


def kernel_id(sensor_id: str) -> str:
    """The kernel's (sysfs folder) spelling of a sensor id given either way."""
    canonical = owfs_id(sensor_id)
    return f"{canonical[:2].lower()}-{bytes.fromhex(canonical[3:])[::-1].hex()}"


class OwserverSource:
    """Thermometers on an owserver; each read is a fresh conversion (``/uncached``), so the
    values are as old as the sample, not as owserver's cache (15 s by default)."""

    def __init__(self, host: str, port: int) -> None:
        self._link = _hw.OwserverLink(host, port)

    def read(self, sensor_ids: Sequence[str]) -> dict[str, float | Unreadable]:
        """Read each sensor (blocking; see ``TemperatureSource``)."""
        return {sensor: self._link.read_temperature(sensor) for sensor in sensor_ids}


class SysfsSource:
    """Thermometers through the kernel's w1-therm driver.

    Newer kernels offer ``temperature`` (millidegrees); every kernel offers ``w1_slave``, whose
    first line ends in ``YES`` when the CRC was right and whose second ends in ``t=<milli°C>``.

    Args:
        root: The w1 device folder (``/sys/bus/w1/devices``; a temporary tree in tests).
    """

    def __init__(self, root: Path) -> None:
        self._root = root

    def read(self, sensor_ids: Sequence[str]) -> dict[str, float | Unreadable]:
        """Read each sensor (blocking; see ``TemperatureSource``)."""
        return {sensor: self._read_one(sensor) for sensor in sensor_ids}

    def _read_one(self, sensor: str) -> float | Unreadable:
        folder = self._root / kernel_id(sensor)
        if not folder.is_dir():
            return Unreadable(f"not on the 1-Wire bus (no {folder})")
        simple = folder / "temperature"
        try:
            if simple.exists():
                milli = _parse_int(simple.read_text(encoding="ascii").strip())
            else:
                milli = _parse_w1_slave(folder / "w1_slave")
        except OSError as exc:
            return Unreadable(f"{folder}: {exc.strerror or exc}")
        if isinstance(milli, Unreadable):
            return milli
        if milli == POWER_ON_MILLI_C:
            return Unreadable("power-on value 85 °C: the conversion did not run")
        return milli / 1000


def _parse_int(text: str) -> int | Unreadable:
    try:
        return int(text)
    except ValueError:
        return Unreadable(f"not a temperature: {text[:40]!r}")


def _parse_w1_slave(path: Path) -> int | Unreadable:
    lines = path.read_text(encoding="ascii", errors="replace").splitlines()
    if len(lines) < 2 or "t=" not in lines[1]:
        return Unreadable(f"{path.name}: unexpected content")
    if not lines[0].rstrip().endswith("YES"):
        return Unreadable(f"{path.name}: CRC error")
    return _parse_int(lines[1].rsplit("t=", 1)[1].strip())
