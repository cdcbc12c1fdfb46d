"""The gateway's displays: status on a serial screen (an M5Stack) or an I2C character LCD.

The gateway builds one :class:`Display` from the ``display`` section of its YAML
(:func:`parse_display_config`), feeds it values, presence, alarms and messages, and runs it;
docs/gateway-display.md says what a user writes and what a display receives.
"""

from fieldhub.gateway.display.config import (
    DisplayConfig,
    DisplayConfigError,
    LcdSinkConfig,
    SerialSinkConfig,
    parse_display_config,
)
from fieldhub.gateway.display.driver import SinkStats
from fieldhub.gateway.display.screen import Display

__all__ = [
    "Display",
    "DisplayConfig",
    "DisplayConfigError",
    "LcdSinkConfig",
    "SerialSinkConfig",
    "SinkStats",
    "parse_display_config",
]
