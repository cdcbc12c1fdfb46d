"""hello.say: what this device is up to, in one line (a bundle's action, docs/bundles.md).

Run by the agent as its own process (``python -I``): arguments would come as environment
variables (``FIELDHUB_ARG_...``); this one needs none.
"""

import os
import platform
import time


def uptime() -> str:
    try:
        with open("/proc/uptime", encoding="ascii") as file:
            seconds = float(file.read().split()[0])
    except OSError:
        return "uptime unknown"
    return f"up {int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
print(
    f"hello from {platform.node()} (hello 1.0.0): {uptime()}, load {load}, "
    f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}"
)
