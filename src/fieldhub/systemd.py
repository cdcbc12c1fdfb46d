"""Readiness and watchdog notifications to systemd (``Type=notify``, ``WatchdogSec=``), for
every program of fieldhub (hub and agent; the gateway later): one home, beside the programs.

The protocol is one datagram per notification on the socket named by ``$NOTIFY_SOCKET``; a
dependency for ten lines of socket code would not pay for itself. Outside systemd (no such
variable) every call does nothing.
"""

from __future__ import annotations

import asyncio
import os
import socket


def notify(message: str) -> bool:
    """Send ``message`` (``READY=1``, ``WATCHDOG=1``, ``STOPPING=1``…); False outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(message.encode(), address)
        except OSError:
            return False
    return True


def watchdog_interval_s() -> float | None:
    """Half the watchdog period systemd asked for (``$WATCHDOG_USEC``), or None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and int(pid) != os.getpid()):
        return None
    return int(usec) / 2_000_000


async def pet_watchdog(interval_s: float) -> None:
    """Tell systemd every ``interval_s`` that the event loop still runs (until cancelled)."""
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval_s)
