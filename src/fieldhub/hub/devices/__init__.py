"""Devices: the in-memory directory, presence, the twin and provisioning.

The records below are the values this wing hands to its callers (the API builds its answers
from them); they are written and read by the store, which callers above never import.
"""

from fieldhub.hub.store.claims import ClaimStatus, ClaimToken, DeviceClaim
from fieldhub.hub.store.devices import DeviceRecord
from fieldhub.hub.store.fleet import FleetFilter, FleetPage, FleetQueries, FleetSummary, SortKey

__all__ = [
    "ClaimStatus",
    "ClaimToken",
    "DeviceClaim",
    "DeviceRecord",
    "FleetFilter",
    "FleetPage",
    "FleetQueries",
    "FleetSummary",
    "SortKey",
]
